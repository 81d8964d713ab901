"""Every way to run a signed-constant subnetwork, side by side: packed bits (PyTorch + C kernels),
dense fp32 (torch), ONNX Runtime fp32, int8 and the compact ONNX file.

Run: nice -n 10 python benchmarks/packed.py [--reps 200] [--models fc-quickstart,fc-4096,conv4]
For each model (quick-start FC 784-1024-1024-10, FC 784-4096-4096-10, conv4 on 3x32x32; masks
from an unsearched model at density 0.5: latency does not depend on which weights are kept):
- median batch latency at 1, 8 and 64 images with 1 and 2 threads, and each engine over dense fp32;
- bytes the loaded model's tensors hold (bits per masked weight) and the RSS growth of a fresh
  process loading it (dense and packed);
- the fp32 and compact .onnx sizes, their ONNX Runtime session start (median of 5), and on the
  10,000 Fashion-MNIST test images (FC models, when installed) whether every engine predicts the same.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import popcli
from popcli.deploy import graph
from popcli.deploy.bake import bake
from popcli.deploy.compact import compact
from popcli.deploy.int8 import quantize_int8
from popcli.nn.packed import packed_weights, resident_bytes

MODELS = {
    "fc-quickstart": dict(arch="fc", hidden=(1024, 1024), batchnorm=True, input_shape=(1, 28, 28)),
    "fc-4096": dict(arch="fc", hidden=(4096, 4096), batchnorm=True, input_shape=(1, 28, 28)),
    "conv4": dict(arch="conv4", input_shape=(3, 32, 32)),
}
ENGINES = ("dense", "packed", "ort_fp32", "ort_int8")
RSS_CHILD = """
import ctypes, gc, sys, popcli, torch
def rss():
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the model holds, not what the allocator kept
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) * 1024
popcli.load(sys.argv[3], mode=sys.argv[2])  # a tiny model first: the loading code's own memory is not counted
before = rss()
first = popcli.load(sys.argv[1], mode=sys.argv[2])
after_first = rss()
second = popcli.load(sys.argv[1], mode=sys.argv[2])  # one more copy: what a model holds once the process is warm
print(after_first - before, rss() - after_first)
"""


def median_ms(predict, x, reps: int) -> float:
    with torch.inference_mode():
        for _ in range(max(5, reps // 10)):
            predict(x)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            predict(x)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def rss_growth(path: Path, mode: str) -> tuple[int, int]:
    """Resident memory (bytes) a fresh process gains by loading ``path`` once (after popcli has loaded a tiny
    model), and by loading a second copy (heap and thread pools already grown: the model alone)."""
    tiny = path.parent / "tiny.safetensors"
    if not tiny.exists():
        popcli.save(popcli.create_model("fc", hidden=(8,), density=0.5, input_shape=(1, 4, 4)).eval(), tiny)
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(path), mode, str(tiny)], capture_output=True,
                         text=True, check=True)
    first, second = out.stdout.strip().splitlines()[-1].split()
    return int(first), int(second)


def start_ms(model_bytes: bytes, threads: int) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        graph.session(model_bytes, threads)
        times.append(time.perf_counter() - start)
    return sorted(times)[2] * 1e3


def fmnist_agreement(engines: dict) -> dict | None:
    """Accuracy of each engine on the 10,000 Fashion-MNIST test images, whether the fp32 ones (every
    engine but int8) predict alike, and int8's agreement with them."""
    from popcli import recipe as recipes
    from popcli.data.sample import real_inputs

    try:
        x, y, _ = real_inputs(recipes.load(None, []), None, test=10_000, train=0)
    except Exception as err:  # not installed: say so and go on
        return {"skipped": str(err).splitlines()[0]}
    predictions = {name: torch.cat([torch.as_tensor(np.asarray(fn(x[i:i + 500]))) for i in range(0, len(x), 500)]
                                   ).argmax(1) for name, fn in engines.items()}
    first = predictions["dense"]
    return {"images": len(y), "accuracy": {k: round(float((p == y).float().mean()), 4) for k, p in predictions.items()},
            "fp32_engines_identical": all(bool((p == first).all()) for k, p in predictions.items() if k != "ort_int8"),
            "int8_agreement": float((predictions["ort_int8"] == first).float().mean())}


def bench_model(name: str, kwargs: dict, tmp: Path, reps: int) -> dict:
    path = tmp / f"{name}.safetensors"
    popcli.save(popcli.create_model(density=0.5, init="signed_constant", **kwargs).eval(), path)
    dense, packed = popcli.load(path), popcli.load(path, mode="packed")
    proto = graph.to_onnx(bake(popcli.load(path, mode="search")), kwargs["input_shape"], {})
    small = compact(proto)[0]
    calibration = torch.randn(256, *kwargs["input_shape"]).split(64)
    fp32_bytes, small_bytes = proto.SerializeToString(), small.SerializeToString()
    int8_bytes = quantize_int8(proto, calibration).SerializeToString()
    result = {"model": name, "rows": [], "files": {
        "fp32_onnx_bytes": len(fp32_bytes), "compact_onnx_bytes": len(small_bytes), "int8_onnx_bytes": len(int8_bytes),
        "compact_over_fp32": len(small_bytes) / len(fp32_bytes)}}
    masked = packed_weights(packed)
    result["memory"] = {"masked_weights": masked, "dense_bytes": resident_bytes(dense), "packed_bytes": resident_bytes(packed),
                        "packed_bits_per_masked_weight": 8 * resident_bytes(packed) / masked,
                        "rss_growth_dense": rss_growth(path, "infer"), "rss_growth_packed": rss_growth(path, "packed")}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        sessions = {"ort_fp32": graph.session(fp32_bytes, threads), "ort_int8": graph.session(int8_bytes, threads)}
        predict = {"dense": dense, "packed": packed, **{k: (lambda s: lambda x: graph.run(s, x))(s) for k, s in sessions.items()}}
        result["files"][f"start_ms_fp32_t{threads}"] = start_ms(fp32_bytes, threads)
        result["files"][f"start_ms_compact_t{threads}"] = start_ms(small_bytes, threads)
        for batch in (1, 8, 64):
            n = reps if batch < 64 or name != "fc-4096" else max(20, reps // 10)
            x = torch.randn(batch, *kwargs["input_shape"])
            row = {"threads": threads, "batch": batch, **{k: median_ms(fn, x, n) for k, fn in predict.items()}}
            result["rows"].append(row)
        if threads == 1 and kwargs["input_shape"] == (1, 28, 28):
            compact_session = graph.session(small_bytes, 1)
            result["fmnist"] = fmnist_agreement({"dense": dense, "packed": packed, **{
                k: (lambda s: lambda x: graph.run(s, x))(s) for k, s in {**sessions, "ort_compact": compact_session}.items()}})
    return result


def show(result: dict) -> None:
    print(f"\n{result['model']}   (ms, median; ratio = engine / dense fp32 torch)")
    print("threads batch " + " ".join(f"{e:>9s}" for e in ENGINES) + "  packed/dense  ort_fp32/dense  int8/dense")
    for r in result["rows"]:
        print(f"{r['threads']:7d} {r['batch']:5d} " + " ".join(f"{r[e]:9.3f}" for e in ENGINES)
              + f"  {r['packed'] / r['dense']:12.2f}  {r['ort_fp32'] / r['dense']:14.2f}  {r['ort_int8'] / r['dense']:10.2f}")
    m, f = result["memory"], result["files"]
    print(f"resident: dense {m['dense_bytes']:,} B, packed {m['packed_bytes']:,} B "
          f"({m['packed_bits_per_masked_weight']:.2f} bits per masked weight); RSS growth on load (first, second copy): "
          f"dense {m['rss_growth_dense'][0]:,} / {m['rss_growth_dense'][1]:,} B, packed {m['rss_growth_packed'][0]:,} / "
          f"{m['rss_growth_packed'][1]:,} B")
    print(f"onnx: fp32 {f['fp32_onnx_bytes']:,} B, compact {f['compact_onnx_bytes']:,} B (1/{1 / f['compact_over_fp32']:.1f}), "
          f"int8 {f['int8_onnx_bytes']:,} B; session start fp32 {f['start_ms_fp32_t1']:.1f} ms, compact "
          f"{f['start_ms_compact_t1']:.1f} ms (1 thread)")
    if "fmnist" in result:
        print(f"fashion-mnist test set: {json.dumps(result['fmnist'])}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            results.append(bench_model(name, MODELS[name], Path(tmp), args.reps))
            show(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
