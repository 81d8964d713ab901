"""Training-step time of edge-popup over dense training of the same architecture and batch.

Both models are built by popcli (same recipe but search.method), fed the same fixed batch, and
timed in alternating rounds so machine noise hits both alike. Prints per-case medians and the
ratio; targets from the issue: conv4 (3x32x32, batch 128) <= 1.10, fc (Fashion-MNIST, batch 128)
<= 1.25. ``--method`` times another method than edge-popup against dense (``--set`` adds recipe
keys to it: ``--method subspace --set search.density=1.0 --set search.subspace_dim=1000``), and
``--vs`` adds methods timed in the same rounds (``--vs edge-popup``); ``lenet`` is LeNet-300-100.

    python benchmarks/step_time.py [--rounds 15] [--steps 5] [--case conv4 --case fc] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from popcli import recipe as recipes
from popcli.models import build_model
from popcli.nn import cpu_kernels
from popcli.engine.optim import make_optimizer, trainable_parameters
from popcli.engine.runtime import keep_freed_memory

CASES = {
    # name: (recipe overrides, input shape [C, H, W], target ratio)
    "conv4": (["model.arch=conv4", "model.init=signed_constant"], (3, 32, 32), 1.10),
    "fc": (["model.arch=fc", "model.hidden=[1024,1024]", "model.batchnorm=true"], (1, 28, 28), 1.25),
    "lenet": (["model.arch=fc", "model.hidden=[300,100]", "model.batchnorm=false"], (1, 28, 28), 1.25),
    "resnet50": (["model.arch=tv_resnet50", "model.init=signed_constant", "search.density=0.3"], (3, 224, 224), 1.15),
}


def _step_fn(case: str, method: str, batch: int, extra: list[str] = ()):
    overrides, shape, _ = CASES[case]
    recipe = recipes.load(None, [*overrides, f"search.method={method}", f"data.batch_size={batch}", *extra])
    model = build_model(recipe.model, recipe.search, in_channels=shape[0], image_size=shape[1], num_classes=10, seed=0)
    model.train()
    optimizer = make_optimizer(trainable_parameters(model), recipe.search)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, *shape, generator=gen), torch.randint(0, 10, (batch,), generator=gen)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _time(step, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def measure(case: str, batch: int, rounds: int, steps: int, method: str = "edge-popup", extra: list[str] = (),
            also: list[str] = ()) -> dict:
    """Median step times of ``method`` (with recipe keys ``extra``), dense and the methods ``also``."""
    fns = {method: _step_fn(case, method, batch, extra), "dense": _step_fn(case, "dense", batch)}
    fns.update({m: _step_fn(case, m, batch) for m in also if m not in fns})
    for fn in fns.values():  # warm-up: allocator, kernels, optimizer state
        _time(fn, 2)
    times: dict[str, list[float]] = {m: [] for m in fns}
    for _ in range(rounds):  # alternate so noise hits every method alike
        for name, fn in fns.items():
            times[name].append(_time(fn, steps))
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    out = {"case": case, "batch": batch, "threads": torch.get_num_threads(), "rounds": rounds, "steps_per_round": steps,
           "method": method, "settings": list(extra), "method_ms": ms[method], "dense_ms": ms["dense"],
           "ratio": ms[method] / ms["dense"], "target": CASES[case][2], "others_ms": {m: ms[m] for m in also}}
    if method == "edge-popup":
        out["edge_popup_ms"] = ms[method]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: conv4 and fc")
    parser.add_argument("--batch", type=int, default=None, help="default: 128 (8 for resnet50)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--method", default="edge-popup", help="the method timed against dense (default edge-popup)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe keys of --method")
    parser.add_argument("--vs", action="append", default=[], metavar="METHOD", help="also time METHOD (defaults)")
    parser.add_argument("--glibc-default", action="store_true",
                        help="leave glibc's malloc as it is (popcli search keeps freed memory, see runtime.keep_freed_memory)")
    args = parser.parse_args()
    tuned = False if args.glibc_default else keep_freed_memory()
    setup = {"cpu_kernels": cpu_kernels.status(), "glibc_keeps_freed_memory": tuned, "torch": torch.__version__}
    if not args.json:
        print(f"{setup['cpu_kernels']}; glibc keeps freed memory: {tuned}; torch {torch.__version__}", flush=True)
    results = []
    for case in args.case or ["conv4", "fc"]:
        batch = args.batch or (8 if case == "resnet50" else 128)
        rounds, steps = (args.rounds, args.steps) if case != "resnet50" else (max(3, args.rounds // 3), 1)
        results.append({**measure(case, batch, rounds, steps, args.method, args.set, args.vs), **setup})
        r = results[-1]
        if not args.json:
            verdict = "ok" if r["ratio"] <= r["target"] else "OVER TARGET"
            others = "".join(f"  {m} {t:8.2f} ms" for m, t in r["others_ms"].items())
            print(f"{case:9s} batch {batch:4d}  {args.method} {r['method_ms']:8.2f} ms  dense {r['dense_ms']:8.2f} ms{others}  "
                  f"ratio {r['ratio']:.3f}  (target <= {r['target']:.2f}: {verdict}; median of {rounds} rounds x {steps} steps, "
                  f"{r['threads']} threads)", flush=True)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
