"""Packed inference (popcli.load(path, mode="packed")) against the dense fp32 infer model.

Run: nice -n 10 python benchmarks/packed.py [--reps 200]
For each model (quick-start FC 784-1024-1024-10, FC 784-4096-4096-10, conv4 on 3x32x32; masks
from an unsearched model at density 0.5: latency does not depend on which weights are kept),
median batch latency at 1, 8 and 64 images with 1 and 2 threads, the ratio packed/dense, and
the bytes each loaded model's tensors hold (bits per masked weight for packed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import popcli
from popcli.nn.packed import packed_weights, resident_bytes

MODELS = {
    "fc-quickstart": dict(arch="fc", hidden=(1024, 1024), batchnorm=True, input_shape=(1, 28, 28)),
    "fc-4096": dict(arch="fc", hidden=(4096, 4096), batchnorm=True, input_shape=(1, 28, 28)),
    "conv4": dict(arch="conv4", input_shape=(3, 32, 32)),
}


def median_ms(model, x, reps: int) -> float:
    with torch.inference_mode():
        for _ in range(max(5, reps // 10)):
            model(x)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    print("model          threads batch  dense_ms packed_ms  ratio")
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in MODELS.items():
            path = Path(tmp) / f"{name}.safetensors"
            popcli.save(popcli.create_model(density=0.5, init="signed_constant", **kwargs).eval(), path)
            dense, packed = popcli.load(path), popcli.load(path, mode="packed")
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for batch in (1, 8, 64):
                    reps = args.reps if batch < 64 or name != "fc-4096" else max(20, args.reps // 10)
                    x = torch.randn(batch, *kwargs["input_shape"])
                    d, p = median_ms(dense, x, reps), median_ms(packed, x, reps)
                    print(f"{name:14s} {threads:7d} {batch:5d} {d:9.3f} {p:9.3f} {p / d:6.2f}")
            bits = resident_bytes(packed) * 8 / packed_weights(packed)
            print(f"{name}: resident dense {resident_bytes(dense)} B, packed {resident_bytes(packed)} B "
                  f"({bits:.2f} bits per masked weight, all tensors counted)")


if __name__ == "__main__":
    main()
