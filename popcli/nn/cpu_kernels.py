"""Typed wrappers of the fused training kernels (``popcli/kernels/train.c``).

``usable(*tensors)`` says whether the kernels are loaded and the tensors are contiguous float32
CPU tensors; when not, callers use the plain torch/numpy path, which computes the same bits.
Building and loading the library is ``popcli.kernels``' job.
"""

from __future__ import annotations

import ctypes
import struct

import torch

from ..kernels import library as load, status, threads  # noqa: F401  (status: re-exported for callers)

_N = ctypes.c_int64


def usable(*tensors: torch.Tensor) -> bool:
    """True when the kernels are loaded and every tensor is a contiguous float32 CPU tensor."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors) \
        and load() is not None


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _bits(value: float) -> int:
    """The float32 bit pattern of |value| (the kernels compare |s| as integers)."""
    return struct.unpack("<I", struct.pack("<f", value))[0] & 0x7FFFFFFF


def count_gather(scores: torch.Tensor, lo: float, hi: float, cap: int) -> tuple[int, int, torch.Tensor]:
    """(#|s| > hi, #lo <= |s| <= hi, those |s| values float32 [min(inside, cap)]) in one pass; the
    inside count is reported as > cap when they did not all fit."""
    out = torch.empty(max(cap, 1), dtype=torch.int32)
    above = _N()
    inside = load().popcli_count_gather(_ptr(scores), scores.numel(), _bits(lo), _bits(hi), _ptr(out), cap,
                                        ctypes.byref(above), threads())
    return above.value, inside, out[: min(inside, cap)].view(torch.float32)


def masked_weight(scores: torch.Tensor, weight: torch.Tensor, threshold: float, ties: int | None = None) -> torch.Tensor:
    """``weight * (|scores| >= threshold)``; with ``ties``, entries equal to the threshold are kept
    only for the first ``ties`` of them by flat index."""
    out = torch.empty_like(weight)
    if ties is None:
        load().popcli_masked_weight(_ptr(scores), _ptr(weight), _ptr(out), weight.numel(), _bits(threshold),
                                    threads())
    else:
        load().popcli_masked_weight_ties(_ptr(scores), _ptr(weight), _ptr(out), weight.numel(), _bits(threshold), ties)
    return out


def masked_weight_gather(scores: torch.Tensor, weight: torch.Tensor, lo: float, hi: float,
                         cap: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """(out, #|s| > hi, flat indices of lo <= |s| <= hi in increasing order, or None when more
    than ``cap``) in one pass, where out = weight * (|s| > hi): the entries inside the bracket
    are still 0 and the caller sets the kept ones to the weight once it knows the threshold."""
    out, idx, above = torch.empty_like(weight), torch.empty(max(cap, 1), dtype=torch.int64), _N()
    inside = load().popcli_masked_weight_gather(_ptr(scores), _ptr(weight), _ptr(out), weight.numel(), _bits(lo),
                                                _bits(hi), _ptr(idx), cap, ctypes.byref(above), threads())
    return out, above.value, idx[:inside] if inside <= cap else None


def score_grad(grad: torch.Tensor, weight: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``(grad * weight) * sign(scores)``: the straight-through gradient of the scores."""
    out = torch.empty_like(grad)
    load().popcli_score_grad(_ptr(grad), _ptr(weight), _ptr(scores), _ptr(out), grad.numel(), threads())
    return out
