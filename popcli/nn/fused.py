"""The training forward/backward of a subnet layer on the CPU in fused passes (``cpu_kernels``).

``FusedStraightThroughMask`` computes exactly what ``layers._StraightThroughMask`` computes
(w * mask forward, (grad * w) * sign(s) backward), bit for bit, without a mask tensor:

- forward, usual case: one pass writes ``w * (|s| > hi)`` and gathers the indices of the few
  entries inside the tracker's bracket [lo, hi] around the last threshold; the exact threshold is
  selected among those and the kept ones are patched in. When the bracket misses (or there is no
  tracker history), the threshold is selected first (``topk.cpu_threshold``) and a second pass
  writes the masked weight.
- backward: one pass writes the score gradient.
Used only for contiguous float32 CPU tensors with the kernels loaded (``cpu_kernels.usable``).
"""

from __future__ import annotations

import numpy as np
import torch

from . import cpu_kernels
from .topk import SMALL_LAYER, ThresholdTracker, cpu_threshold, from_candidates, kept_count


def _patch_bracket(out: torch.Tensor, weight: torch.Tensor, scores: torch.Tensor, above: int, idx: torch.Tensor,
                   k: int) -> float | None:
    """Set out = weight at the kept entries among ``idx`` (inside the bracket, increasing order);
    returns the threshold, or None when the bracket does not hold it (``out`` is then unusable)."""
    index = idx.numpy()
    values = np.abs(scores.detach().numpy().reshape(-1)[index])  # [c] |s| inside the bracket, index order
    found = from_candidates(values, above, k)
    if found is None:
        return None
    keep, ties = values > found.value, values == found.value
    if found.greater + found.equal > k:  # surplus ties: the first (k - greater) by flat index
        ties &= np.cumsum(ties) <= k - found.greater
    chosen = index[keep | ties]
    out.numpy().reshape(-1)[chosen] = weight.detach().numpy().reshape(-1)[chosen]  # w * 1.0 == w, as the kernel writes
    return found.value


def masked_weight(weight: torch.Tensor, scores: torch.Tensor, density: float, tracker: ThresholdTracker) -> torch.Tensor:
    """weight * topk_mask(scores, density) via the CPU kernels (see the module docstring)."""
    n = scores.numel()
    k = kept_count(n, density)
    if k >= n:
        return weight.clone()
    bracket = tracker.bracket() if n > SMALL_LAYER else None
    if bracket is not None:
        out, above, idx = cpu_kernels.masked_weight_gather(scores, weight, *bracket, cap=n // 64 + 1024)
        t = _patch_bracket(out, weight, scores, above, idx, k) if idx is not None else None
        if t is not None:
            tracker.update(t, hit=True)
            return out
    t, greater, equal = cpu_threshold(scores, k, None)
    tracker.update(t, hit=False if bracket is not None else None)
    return cpu_kernels.masked_weight(scores, weight, t, ties=None if greater + equal == k else k - greater)


class FusedStraightThroughMask(torch.autograd.Function):
    """w_eff = w * mask(|s|); grad_s = (grad_w_eff * w) * sign(s); the weight gets no gradient."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, density: float,
                tracker: ThresholdTracker) -> torch.Tensor:
        ctx.save_for_backward(weight, scores)
        return masked_weight(weight, scores, density, tracker)

    @staticmethod
    def backward(ctx, grad_effective: torch.Tensor):
        weight, scores = ctx.saved_tensors
        return None, cpu_kernels.score_grad(grad_effective.contiguous(), weight, scores), None, None
