"""Signed supermask (Koster et al., "Signing the Supermask: Keep, Hide, Invert", ICLR 2022,
arXiv:2201.13361): each weight is dropped, kept, or kept with its sign inverted.

    w_eff = w * t,   t = sign(s) on the kept weights, 0 elsewhere   (t in {-1, 0, +1})

The kept weights are the top ``density`` fraction of |s| in the layer (the paper's "variable
threshold" variant, which makes density a recipe setting; its main experiments use a fixed
threshold on |s| instead: docs/ALGORITHM.md). sign(0) is taken as +1, so every kept weight has a
sign. Backward is the paper's straight-through estimator on s itself (t + s - stopgrad(s)):
grad_s = grad_w_eff * w, no sign(s) factor (moving s up moves t towards +1).

Scores start as U(-b, b) with b = sqrt(6 / (fan_in + fan_out)), the paper's Xavier-uniform mask
init. A loaded layer keeps its kept-mask in ``fixed_mask`` and its signs in ``flipped`` here.
"""

from __future__ import annotations

import math

import torch


def signs(scores: torch.Tensor) -> torch.Tensor:
    """+1 where s >= 0, -1 where s < 0 (float32, the scores' shape)."""
    return torch.where(scores.detach() < 0, -1.0, 1.0).to(torch.float32)


class _SignedStraightThrough(torch.autograd.Function):
    """w_eff = w * t; grad_s = grad_w_eff * w (the straight-through estimator of t w.r.t. s)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, ternary: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return weight * ternary

    @staticmethod
    def backward(ctx, grad_effective: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return None, grad_effective * weight, None


class SignedRule:
    """The layer rule of the signed supermask (``SubnetMixin.rule``)."""

    name = "signed-supermask"

    def __init__(self) -> None:
        self.flipped: torch.Tensor | None = None  # a loaded layer: bool, True where t = -1

    def score_bound(self, shape) -> float:
        receptive = math.prod(shape[2:])
        return math.sqrt(6.0 / (shape[1] * receptive + shape[0] * receptive))

    def ternary(self, layer) -> torch.Tensor:
        """t in {-1, 0, +1} as the weight's dtype (the weight's shape)."""
        mask = layer._mask(layer.weight.dtype)
        if layer.fixed_mask is not None:
            if self.flipped is None:
                raise RuntimeError("a loaded signed-supermask layer needs its signs (SignedRule.flipped)")
            return mask * torch.where(self.flipped, -1.0, 1.0).to(mask)
        return mask * signs(layer.scores).to(mask)

    def effective_weight(self, layer) -> torch.Tensor:
        ternary = self.ternary(layer)
        if layer.fixed_mask is not None or not layer.scores.requires_grad:
            return layer.weight * ternary
        return _SignedStraightThrough.apply(layer.weight, layer.scores, ternary)

    def flipped_mask(self, layer) -> torch.Tensor:
        """bool, the weight's shape: True where the kept weight's sign is inverted (t = -1)."""
        return self.ternary(layer) < 0
