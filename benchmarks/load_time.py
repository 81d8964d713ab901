"""Loading a ResNet-50 artifact against torch.randn of the same number of floats.

For each init it builds the edge-popup ResNet-50 (density 0.3, random scores: the mask's content
does not change the work), exports it (auto codec: rans at this density; --codec to change) and
times, in alternating rounds, torch.randn(n_masked_weights), the artifact's core work
(regeneration, checksums and masks: ``artifact.verify``) and the whole ``popcli.load`` (which
also builds the module structure and installs the tensors). Targets from the issue: loading
<= 2.5x randn for kaiming_normal and <= 1.0x for signed_constant.

    python benchmarks/load_time.py [--rounds 7] [--codec auto] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import popcli
from popcli import artifact, kernels
from popcli import recipe as recipes
from popcli.models import build_model, masked_layers

TARGETS = {"kaiming_normal": 2.5, "signed_constant": 1.0}


def _write(init: str, codec: str, folder: Path) -> tuple[Path, int]:
    recipe = recipes.load(None, ["model.arch=tv_resnet50", f"model.init={init}", "search.density=0.3",
                                 "data.dataset=imagenet"])
    model = build_model(recipe.model, recipe.search, in_channels=3, image_size=224, num_classes=1000, seed=0)
    n = sum(layer.weight.numel() for _, layer in masked_layers(model))
    path = folder / f"resnet50-{init}.safetensors"
    popcli.save(model, path, recipe=recipe, data_info={"shape": [3, 224, 224], "num_classes": 1000}, codec=codec)
    return path, n


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(init: str, codec: str, rounds: int, folder: Path) -> dict:
    path, n = _write(init, codec, folder)
    runs = {"randn": lambda: torch.randn(n), "core": lambda: artifact.verify(artifact.read(path)),
            "load": lambda: popcli.load(path)}
    for fn in runs.values():
        fn()  # warm-up: kernel build, allocator, file cache
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for key, fn in runs.items():
            times[key].append(_seconds(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"init": init, "codec": artifact.read(path).codec, "masked_weights": n, "artifact_bytes": path.stat().st_size,
            "randn_s": med["randn"], "core_s": med["core"], "load_s": med["load"],
            "core_over_randn": med["core"] / med["randn"], "load_over_randn": med["load"] / med["randn"],
            "target": TARGETS[init], "rounds": rounds, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--codec", default="auto", choices=["auto", "packbits", "rans"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    if not args.json:
        print(f"{kernels.status()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for init in TARGETS:
            r = measure(init, args.codec, args.rounds, Path(tmp))
            results.append({**r, "kernels": kernels.status()})
            if not args.json:
                print(f"{init:16s} {r['masked_weights']:,} weights, {r['codec']} masks, {r['artifact_bytes']:,} bytes: "
                      f"randn {r['randn_s'] * 1e3:.0f} ms | regenerate+checksum+masks {r['core_s'] * 1e3:.0f} ms "
                      f"({r['core_over_randn']:.2f}x) | popcli.load {r['load_s'] * 1e3:.0f} ms "
                      f"({r['load_over_randn']:.2f}x) | target <= {r['target']}x (median of {r['rounds']})", flush=True)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
