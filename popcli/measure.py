"""Measuring a model, one implementation for the search, ``popcli eval`` and the deploy checks:
top-1 / top-5 counting, accuracy over a set of images, latency percentiles, the machine.

``count_correct(logits, labels)`` is the one place hits are counted (top-5 only for more than 5
classes, where it would otherwise always be 1, as torchvision's references report it);
``accuracies(predict, x, y)`` applies it batch by batch to any batch -> logits function (a torch
module, an ONNX Runtime session); ``latency(fn, batch_size)`` times calls after a warm-up and
reports p50/p90/p99; ``machine()`` names what the figures were measured on;
``torch_threads(n)`` runs a block with torch's intra-op thread count at n and gives the caller's
count back after it, ``keeps_torch_threads`` does it for a whole function (the count is
process-wide, so a library call must not leave it changed).
Nothing prints.
"""

from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager
from functools import wraps
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch

TOP5_MIN_CLASSES = 6  # top-5 is reported for more than 5 classes


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int | None]:
    """(top-1 hits, top-5 hits or None for <= 5 classes) of one batch: logits [B, K], labels [B]."""
    top1 = int((logits.argmax(1) == labels).sum())
    if logits.shape[1] < TOP5_MIN_CLASSES:
        return top1, None
    # [B, 5] best classes; a hit when the label is among them
    return top1, int((logits.topk(5, dim=1).indices == labels[:, None]).any(1).sum())


def accuracies(predict: Callable[[torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor,
               batch_size: int = 500) -> tuple[float, float | None]:
    """(top-1, top-5) accuracy of ``predict`` (a batch -> logits [B, K] function, tensor or array)
    on (x, y); top-5 is None for K <= 5 classes."""
    correct = correct5 = 0
    top5 = False
    for start in range(0, len(y), batch_size):
        logits, labels = torch.as_tensor(predict(x[start:start + batch_size])), y[start:start + batch_size]
        hits, hits5 = count_correct(logits, labels)
        correct += hits
        top5 = hits5 is not None
        correct5 += hits5 or 0
    seen = max(1, len(y))
    return correct / seen, (correct5 / seen if top5 else None)


def accuracy(predict: Callable[[torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``predict`` (a batch -> logits array/tensor function) on (x, y)."""
    return accuracies(predict, x, y, batch_size)[0]


def latency(fn: Callable[[], Any], batch_size: int, *, warmup_s: float = 0.3, min_reps: int = 30, min_s: float = 1.0,
            max_reps: int = 10_000) -> dict[str, float]:
    """Per-call latency of ``fn``: warm up for ``warmup_s``, then time at least ``min_reps`` calls
    and ``min_s`` seconds; percentiles of the individual calls."""
    end = time.perf_counter() + warmup_s
    fn()
    while time.perf_counter() < end:
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    p50 = float(np.percentile(ms, 50))
    return {"p50_ms": p50, "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "reps": len(times), "images_per_s": 1e3 * batch_size / p50}


def machine() -> dict[str, Any]:
    """The CPU, cores and library versions every figure was measured with."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "system": platform.system(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Torch's intra-op thread count set to ``threads`` (None: left as it is) inside the block and
    restored after it, also on an exception; yields the count in effect."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


Fn = TypeVar("Fn", bound=Callable[..., Any])


def keeps_torch_threads(fn: Fn) -> Fn:
    """``fn`` may set torch's thread count for its work; the caller's count is back when it returns."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads(None):
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
