"""Exact top-k masks in O(n): the selection at the heart of edge-popup.

``topk_mask(scores, density)`` keeps the ``kept_count(n, density)`` entries of largest |score|;
among equal |score| the lower flat index wins. A full sort (the reference code's approach) is
O(n log n) and costs seconds per step on ResNet-50; ``torch.kthvalue`` is O(n) but slow on CPU
(~9 ns per element here).

On the CPU the threshold t (the k-th largest |s|) is found in one pass: a bracket [lo, hi] that
very likely holds t, a count of the entries above it and a gather of the few inside, then an
exact selection among those. The bracket comes from the layer's previous threshold when a
``ThresholdTracker`` is passed (scores move ~1e-4 relative per step, so ~0.05% of entries fall
inside), else from quantiles of a strided sample (~5% inside). The pass is the fused C kernel
(``cpu_kernels``) when it is available, numpy otherwise. A bracket that misses falls back to a
wider one and finally to a selection over everything (np.partition): always the exact top-k.
Accelerators use ``torch.topk`` with no host sync, and so does a forward that ``torch.jit.trace``
or ``torch.export`` records (``capturing``): the same mask, in graph ops.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from . import cpu_kernels

_SAMPLE = 4096  # strided sample size for the bracket without a tracker (sorting 4K: ~0.06 ms)
_SIGMAS = 3.5  # sample bracket half-width in standard deviations of a sample quantile's rank
SMALL_LAYER = 8192  # at or below this many scores a direct selection is as fast as a bracket


class Threshold(NamedTuple):
    value: float  # t: the k-th largest |score|
    greater: int  # entries with |s| > t
    equal: int  # entries with |s| == t (the mask keeps k - greater of them, lowest index first)


class ThresholdTracker:
    """A layer's last threshold, used to bracket the next one (a hint: never changes a result).

    The bracket is t_last * (1 +- width); width follows the observed relative step of t (x4,
    clamped), and doubles after a miss.
    """

    def __init__(self) -> None:
        self.last: float | None = None
        self.width = 1e-3  # relative half-width of the next bracket

    def bracket(self) -> tuple[float, float] | None:
        if self.last is None or not self.last > 0.0:
            return None
        return self.last * (1.0 - self.width), self.last * (1.0 + self.width)

    def update(self, value: float, hit: bool | None) -> None:
        """Record threshold ``value``; ``hit``: whether this tracker's bracket held it (None: none tried)."""
        if hit and self.last:
            self.width = min(0.05, max(1e-6, 4.0 * abs(value - self.last) / self.last))
        elif hit is False:
            self.width = min(0.05, self.width * 2.0)
        self.last = value


def kept_count(n: int, density: float) -> int:
    """Weights kept in a layer of ``n``: round half up of density * n (float64), at least 1."""
    return min(n, max(1, math.floor(density * n + 0.5)))


def from_candidates(values: np.ndarray, above: int, k: int) -> Threshold | None:
    """The threshold from the |s| values inside a bracket and the count above it; None on a miss.

    numpy: these arrays are small (~1e3 entries with a tracker), where its per-call overhead is
    ~10x below torch's.
    """
    need = k - above  # rank of t among the candidates
    if not 0 < need <= values.size:
        return None
    t = np.partition(values, values.size - need)[values.size - need]
    # every entry equal to t lies inside the bracket, so both counts come from the candidates
    return Threshold(float(t), above + int(np.count_nonzero(values > t)), int(np.count_nonzero(values == t)))


def _in_bracket(flat: torch.Tensor, k: int, lo: float, hi: float) -> Threshold | None:
    """Exact threshold of contiguous 1-D CPU float32 ``flat`` (signed scores) if it lies in [lo, hi]."""
    if cpu_kernels.usable(flat):
        cap = flat.numel() // 8 + 1024  # a bracket holding more than this is not worth gathering
        above, inside, candidates = cpu_kernels.count_gather(flat, lo, hi, cap)
        return from_candidates(candidates.numpy(), above, k) if inside <= cap else None
    values = np.abs(flat.numpy())  # numpy: its comparisons and compaction beat torch's bool kernels here
    inside = values >= np.float32(lo)
    at_least_lo = int(np.count_nonzero(inside))
    np.logical_and(inside, values <= np.float32(hi), out=inside)
    candidates = values[inside]
    return from_candidates(candidates, at_least_lo - candidates.size, k)


def _sample_bracket(flat: torch.Tensor, k: int) -> tuple[float, float] | None:
    """[lo, hi] from quantiles of a strided sample of |flat|, or None when k is too extreme."""
    n = flat.numel()
    sample = np.sort(np.abs(flat[:: max(1, n // _SAMPLE)].numpy()))
    m = sample.size
    pos = m * (1.0 - k / n)  # where the threshold falls in the sorted sample
    margin = _SIGMAS * math.sqrt(m * (k / n) * (1 - k / n)) + 4
    lo_i, hi_i = int(pos - margin), int(pos + margin) + 1
    if lo_i < 0 or hi_i >= m:
        return None
    return float(sample[lo_i]), float(sample[hi_i])


def cpu_threshold(scores: torch.Tensor, k: int, tracker: ThresholdTracker | None = None) -> Threshold:
    """The exact threshold of the top-k of |scores| (CPU, any shape), using and updating ``tracker``."""
    flat = scores.detach().reshape(-1).float().contiguous()
    found, hint_hit = None, None
    if flat.numel() > SMALL_LAYER:
        hinted = tracker.bracket() if tracker is not None else None
        if hinted is not None:
            found = _in_bracket(flat, k, *hinted)
            hint_hit = found is not None
        if found is None:
            sampled = _sample_bracket(flat, k)
            found = _in_bracket(flat, k, *sampled) if sampled is not None else None
    if found is None:  # small layer, or both brackets missed: select on everything (exact, slower)
        found = from_candidates(np.abs(flat.numpy()), 0, k)
    if tracker is not None:
        tracker.update(found.value, hint_hit)
    return found


def capturing() -> bool:
    """Whether ``torch.jit.trace`` or ``torch.export`` is recording the forward: the selection must
    then be torch ops only (no numpy, no C kernel, no host reads)."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def _accelerator_mask(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Exact bool top-k on a GPU without a host sync: t from ``topk``, ties resolved by cumsum."""
    t = torch.topk(flat, k, sorted=False).values.min()
    greater, ties = flat > t, flat == t
    return greater | (ties & (torch.cumsum(ties, 0) <= k - greater.sum()))


@torch.no_grad()
def topk_mask(scores: torch.Tensor, density: float, dtype: torch.dtype = torch.bool,
              tracker: ThresholdTracker | None = None, signed: bool = False) -> torch.Tensor:
    """Mask of ``scores``' shape keeping the top ``density`` fraction of |scores|: 1 kept, 0 not.

    ``dtype=torch.bool`` (default) or a float dtype (what a forward multiplies by: writing it
    directly saves a conversion pass). ``tracker`` speeds up repeated calls on moving scores.
    ``signed=True`` ranks the scores themselves (a supermask keeps the largest sigmoid(s)); that
    path is a plain kthvalue, meant for the cached evaluation mask.
    """
    n = scores.numel()
    k = kept_count(n, density)
    if k >= n:
        return torch.ones_like(scores, dtype=dtype)
    flat = scores.detach().flatten().float()
    if capturing():  # the same mask in torch ops, so that a traced / exported graph computes it
        return _accelerator_mask(flat if signed else flat.abs(), k).to(dtype).view_as(scores)
    if signed:
        t = float(torch.kthvalue(flat.cpu(), n - k + 1).values)
        greater, equal = int(torch.count_nonzero(flat > t)), int(torch.count_nonzero(flat == t))
    elif scores.device.type != "cpu":
        return _accelerator_mask(flat.abs(), k).to(dtype).view_as(scores)
    else:
        t, greater, equal = cpu_threshold(scores, k, tracker)
        flat = flat.abs()
    if greater + equal == k:  # the common case: no surplus ties, the mask is s >= t
        return torch.ge(flat, t, out=torch.empty(flat.shape, dtype=dtype, device=flat.device)).view_as(scores)
    mask = flat > t  # surplus ties at t: keep the first (k - #greater) of them by flat index
    mask[torch.nonzero(flat == t).flatten()[: k - greater]] = True
    return mask.to(dtype).view_as(scores)


@torch.no_grad()
def global_topk_masks(scores: list[torch.Tensor], density: float) -> list[torch.Tensor]:
    """One top-k across several layers: layers concatenated in order, ties by (layer, index)."""
    flat = torch.cat([s.detach().abs().flatten().float() for s in scores])
    mask = topk_mask(flat, density)
    return [m.view_as(s) for m, s in zip(torch.split(mask, [s.numel() for s in scores]), scores)]
