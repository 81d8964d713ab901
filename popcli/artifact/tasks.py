"""Which task a batch of images belongs to: SupSup's one-shot task inference over a multi-mask file.

SupSup (Wortsman et al. 2020, "Supermasks in Superposition", arXiv:2006.14769, Sec. 3.3) keeps
one mask per task over one set of random weights. Given images of an unknown task it superimposes
all k masks with coefficients alpha (the simplex, alpha_i = 1/k at first):

    W(alpha) = W * (sum_i alpha_i M_i)            for every masked layer
    p(alpha) = softmax(f(x; W(alpha)))            [B, classes]
    H(alpha) = mean over the batch of -sum_c p log p

and picks, in one shot, the task whose coefficient most lowers the entropy when raised: the
largest negative gradient, ``argmax_i -dH/dalpha_i`` (a correct mask makes the model confident).
One forward and one backward of the mixed model, whatever k.

``TaskMixture(models)`` takes the k baked models of one file (``rebuild`` builds them: plain
layers holding ``w * M_i``, batch norm not folded, so that ``sum_i alpha_i (w * M_i)`` is exactly
W(alpha)); tensors every mask shares pass through, tensors that differ (the masked weights; a
mask's own batch-norm statistics or trained dense layers, which the paper's models do not have)
are mixed by the same alpha (buffers such as running statistics without a gradient: batch norm
takes none through them; the gradient is the masks'). ``infer(x)`` returns a ``TaskGuess``. Nothing here reads files or prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.func import functional_call

from ..errors import ArtifactError

AUTO = "auto"  # the mask name that asks for inference (popcli.load(path, mask="auto", inputs=x), --mask auto)


@dataclass(frozen=True)
class TaskGuess:
    """The inferred task: its mask name, and per mask the entropy gradient dH/dalpha_i."""

    mask: str
    gradients: dict[str, float]  # the chosen mask has the smallest (most negative)
    entropy: float  # H at alpha = 1/k, nats

    def to_dict(self) -> dict:
        return {"mask": self.mask, "entropy_gradient": dict(self.gradients), "entropy": self.entropy}


class TaskMixture:
    """The superposition of k same-structure models (see the module docstring)."""

    def __init__(self, models: dict[str, nn.Module]):
        if not models:
            raise ArtifactError("task inference needs at least one mask")
        self.names = list(models)
        self.model = models[self.names[0]].eval()
        states = [m.state_dict() for m in models.values()]
        keys = list(states[0])
        if any(list(s) != keys for s in states[1:]):
            raise ArtifactError("the masks of this file rebuild models with different tensors; task inference needs "
                                "one architecture")
        self.buffers = {name for name, _ in self.model.named_buffers()}
        self.shared: dict[str, torch.Tensor] = {}
        self.stacked: dict[str, torch.Tensor] = {}  # [k, ...] per tensor that differs between masks
        for key in keys:
            values = [s[key].detach() for s in states]
            if values[0].is_floating_point() and any(not torch.equal(values[0], v) for v in values[1:]):
                self.stacked[key] = torch.stack(values)
            else:
                self.shared[key] = values[0]  # equal in every mask (or a counter such as num_batches_tracked)

    def entropy(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """H(alpha): the mean output entropy (nats) of the mixed model on the images ``x`` [B, C, H, W],
        differentiable in ``alpha`` [k] through the mixed parameters."""
        mixed = {key: torch.tensordot((alpha.detach() if key in self.buffers else alpha).to(t.dtype), t, dims=1)
                 for key, t in self.stacked.items()}  # statistics mixed, not differentiated (batch norm)
        logits = functional_call(self.model, {**self.shared, **mixed}, (x.to(alpha.device, torch.float32),))
        logp = torch.log_softmax(logits.float(), dim=1)
        return -(logp.exp() * logp).sum(1).mean()

    def infer(self, x: torch.Tensor) -> TaskGuess:
        """The task of the images ``x`` [B, C, H, W] (one guess for the whole batch)."""
        k = len(self.names)
        if k == 1 or not self.stacked:  # one mask, or masks that are all the same: nothing to tell apart
            return TaskGuess(self.names[0], {name: 0.0 for name in self.names}, float("nan"))
        device = next(iter(self.stacked.values())).device
        alpha = torch.full((k,), 1.0 / k, dtype=torch.float32, device=device, requires_grad=True)
        with torch.enable_grad():
            entropy = self.entropy(x, alpha)
            (grad,) = torch.autograd.grad(entropy, alpha)
        best = int(torch.argmin(grad))  # the largest negative gradient of the entropy
        return TaskGuess(self.names[best], {n: float(g) for n, g in zip(self.names, grad)}, float(entropy.detach()))
