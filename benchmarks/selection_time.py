"""Cost of one step's top-k selection over all of ResNet-50's scores (25.5M), three ways.

popcli's selection (``topk.cpu_threshold`` with each layer's tracker, as in training: scores
moved a little since the last step), ``torch.kthvalue`` per layer (O(n), no bracket) and a full
``torch.sort`` per layer (what the reference code does). Medians of interleaved rounds.

    python benchmarks/selection_time.py [--rounds 5] [--density 0.3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from popcli import kernels
from popcli import recipe as recipes
from popcli.models import build_model, masked_layers
from popcli.nn.topk import ThresholdTracker, cpu_threshold, kept_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--density", type=float, default=0.3)
    args = parser.parse_args()
    recipe = recipes.load(None, ["model.arch=tv_resnet50", f"search.density={args.density}"])
    model = build_model(recipe.model, recipe.search, in_channels=3, image_size=224, num_classes=1000, seed=0)
    scores = [layer.scores.detach() for _, layer in masked_layers(model)]
    trackers = [ThresholdTracker() for _ in scores]
    ks = [kept_count(s.numel(), args.density) for s in scores]
    gen = torch.Generator().manual_seed(0)

    def popcli_step():
        for s, k, tracker in zip(scores, ks, trackers):
            cpu_threshold(s, k, tracker)

    def kthvalue_step():
        for s, k in zip(scores, ks):
            torch.kthvalue(s.abs().flatten(), s.numel() - k + 1)

    def sort_step():
        for s in scores:
            torch.sort(s.abs().flatten())

    popcli_step()  # the trackers' first bracket comes from a sample
    times = {"popcli": [], "kthvalue": [], "sort": []}
    for _ in range(args.rounds):
        for s in scores:  # an optimizer step's worth of movement
            s.add_(torch.randn(s.shape, generator=gen), alpha=1e-4 * float(s.abs().mean()))
        for name, fn in (("popcli", popcli_step), ("kthvalue", kthvalue_step), ("sort", sort_step)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    n = sum(s.numel() for s in scores)
    print(f"{kernels.status()}; {n:,} scores in {len(scores)} layers, density {args.density}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds:")
    for name, values in times.items():
        print(f"  {name:9s} {statistics.median(values) * 1e3:9.1f} ms per step")


if __name__ == "__main__":
    main()
