"""ONNX Runtime against PyTorch eager, and int8 against fp32, measured side by side in one run.

1. conv6 on 3x32x32 inputs (density 0.5), batch 1: ONNX Runtime fp32 p50 over PyTorch eager p50
   (eager: the baked model, the same graph ONNX Runtime runs; the subnet model as loaded is also
   shown). Target <= 0.6.
2. The quick-start model on Fashion-MNIST, batch 64: ONNX Runtime int8 p50 over fp32 p50, and the
   test accuracy of both. Target <= 0.7 with at most 1 point of accuracy lost. Pass --artifact
   with a quick-start artifact, or the script runs the quick-start search first (~80 s).

    python benchmarks/onnx_latency.py [--artifact quickstart.safetensors] [--rounds 9] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

import popcli
from popcli.deploy import graph as onnx_export
from popcli.deploy.int8 import quantize_int8
from popcli import recipe as recipes
from popcli.deploy.bake import bake
from popcli.measure import latency, machine
from popcli.data.sample import real_inputs
from popcli.deploy.int8 import CALIBRATION_IMAGES
from popcli.measure import accuracy
from popcli.export import export
from popcli.models import build_model
from popcli.engine.loop import search


def _interleaved(fns: dict, batch: int, rounds: int) -> dict[str, float]:
    """Median over rounds of each function's p50 latency, rounds alternating between functions."""
    per = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            per[name].append(latency(fn, batch, warmup_s=0.1, min_reps=50, min_s=0.3)["p50_ms"])
    return {name: statistics.median(values) for name, values in per.items()}


def conv6_batch1(rounds: int) -> dict:
    recipe = recipes.load(None, ["model.arch=conv6", "search.density=0.5", "data.dataset=cifar10"])
    model = build_model(recipe.model, recipe.search, in_channels=3, image_size=32, num_classes=10, seed=0).eval()
    baked = bake(model)
    sess = onnx_export.session(onnx_export.to_onnx(baked, (3, 32, 32), {}), torch.get_num_threads())
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def eager(m):
        def run():
            with torch.no_grad():
                m(x)
        return run

    med = _interleaved({"onnxruntime_fp32": lambda: onnx_export.run(sess, x), "eager_baked": eager(baked),
                        "eager_subnet": eager(model)}, 1, rounds)
    return {"case": "conv6 3x32x32 batch 1", **{f"{k}_ms": v for k, v in med.items()},
            "ratio": med["onnxruntime_fp32"] / med["eager_baked"],
            "ratio_vs_subnet": med["onnxruntime_fp32"] / med["eager_subnet"], "target": 0.6}


def quickstart_int8(artifact: Path | None, rounds: int, tmp: Path) -> dict:
    if artifact is None:
        search(recipes.load(None), tmp / "run")
        export(tmp / "run", tmp / "quickstart.safetensors")
        artifact = tmp / "quickstart.safetensors"
    model = popcli.load(artifact)
    recipe = popcli.artifact.read(artifact).recipe
    x, y, calibration = real_inputs(recipe, None, test=10**9, train=CALIBRATION_IMAGES)
    fp32 = onnx_export.to_onnx(bake(model), tuple(x.shape[1:]), {})
    int8 = quantize_int8(fp32, calibration.split(64))
    sessions = {"fp32": onnx_export.session(fp32, torch.get_num_threads()),
                "int8": onnx_export.session(int8, torch.get_num_threads())}
    batch = x[:64]
    med = _interleaved({name: (lambda s=s: onnx_export.run(s, batch)) for name, s in sessions.items()}, 64, rounds)
    acc = {name: accuracy(lambda b, s=s: onnx_export.run(s, b), x, y) for name, s in sessions.items()}
    return {"case": "quick start (fc 1024-1024, Fashion-MNIST) batch 64", "fp32_ms": med["fp32"], "int8_ms": med["int8"],
            "ratio": med["int8"] / med["fp32"], "fp32_acc": acc["fp32"], "int8_acc": acc["int8"],
            "acc_change_points": 100 * (acc["int8"] - acc["fp32"]), "target": 0.7}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, help="a quick-start artifact (else the search runs first)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [conv6_batch1(args.rounds), quickstart_int8(args.artifact, args.rounds, Path(tmp))]
    info = {**machine(), "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps({"machine": info, "results": results}))
        return
    print(f"{info['cpu']}, {info['threads']} threads, torch {info['torch']}, onnxruntime {info['onnxruntime']}")
    a, b = results
    print(f"{a['case']}: onnxruntime fp32 {a['onnxruntime_fp32_ms']:.3f} ms, eager (baked) {a['eager_baked_ms']:.3f} ms, "
          f"eager (subnet layers) {a['eager_subnet_ms']:.3f} ms -> ratio {a['ratio']:.2f} (vs subnet "
          f"{a['ratio_vs_subnet']:.2f}; target <= {a['target']})")
    print(f"{b['case']}: int8 {b['int8_ms']:.3f} ms, fp32 {b['fp32_ms']:.3f} ms -> ratio {b['ratio']:.2f} "
          f"(target <= {b['target']}); accuracy int8 {b['int8_acc']:.2%} vs fp32 {b['fp32_acc']:.2%} "
          f"({b['acc_change_points']:+.2f} points)")


if __name__ == "__main__":
    main()
