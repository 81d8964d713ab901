"""biprop (Diffenderfer & Kailkhura, "Multi-Prize Lottery Tickets", ICLR 2021, arXiv:2103.09377).

Edge-popup's top-k of |s| selects the weights; the kept ones are binarized:

    w_eff = alpha * sign(w) * m,     alpha = mean |w| over the kept weights of the layer

alpha is recomputed every forward from the frozen weight and the current mask, so it is a
function of (seed, mask): an artifact stores only the mask and records alpha to check it.
Backward (as the reference code's GetQuantnet_binary): the gradient reaching the mask is
grad_w_eff * sign(w); it is passed to |s| times |w|, so grad_|s| = grad_w_eff * w and
grad_s = sign(s) * grad_w_eff * w, edge-popup's estimator; alpha gets no gradient.

``alpha`` is computed so that every machine gets the same float32: the kept |w| (float64, flat C
order) are summed left to right (numpy's cumulative sum is sequential), divided by the kept count
in float64 and rounded once to float32. A layer that keeps nothing has alpha 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def alpha(weight: torch.Tensor, keep: torch.Tensor) -> float:
    """mean |w| over ``keep`` (bool, weight's shape) as a float32 value, bit-reproducible."""
    kept = weight.detach().reshape(-1)[keep.detach().reshape(-1)].abs().to("cpu", torch.float64).numpy()
    if kept.size == 0:
        return 0.0
    return float(np.float32(np.cumsum(kept)[-1] / kept.size))


def binarized(weight: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    """value * sign(w) * mask (mask 0/1 in weight's dtype): +-value on kept weights, 0 elsewhere."""
    return torch.sign(weight) * mask * value


class _BinarizedStraightThrough(torch.autograd.Function):
    """w_eff = alpha * sign(w) * m(|s|); grad_s = sign(s) * grad_w_eff * w (see the module docstring)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
        ctx.save_for_backward(weight, scores)
        return binarized(weight, mask, value)

    @staticmethod
    def backward(ctx, grad_effective: torch.Tensor):
        weight, scores = ctx.saved_tensors
        return None, grad_effective * weight * torch.sign(scores), None, None


class BipropRule:
    """The layer rule of biprop (``SubnetMixin.rule``); ``last_alpha`` is the latest forward's alpha."""

    name = "biprop"

    def __init__(self) -> None:
        self.last_alpha: float | None = None

    def score_bound(self, shape) -> float:  # edge-popup's score init
        return 1.0 / math.sqrt(math.prod(shape[1:]))

    def effective_weight(self, layer) -> torch.Tensor:
        mask = layer._mask(layer.weight.dtype)  # fixed, global override, training top-k or cached eval mask
        self.last_alpha = value = alpha(layer.weight, mask.bool())
        if layer.fixed_mask is not None or not layer.scores.requires_grad:
            return binarized(layer.weight, mask, value)
        return _BinarizedStraightThrough.apply(layer.weight, layer.scores, mask, value)

    def layer_state(self, layer) -> dict:
        """What the artifact records for this layer: alpha (checked on load)."""
        return {"alpha": alpha(layer.weight, layer.mask())}
