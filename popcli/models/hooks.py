"""The hooks a built model carries: global top-k, the supermask sampler, the step they read.

``GlobalTopK`` ranks all subnet layers together (``search.global_topk``); ``SupermaskSampler``
draws supermask layers' Bernoulli masks before each training forward; ``set_step`` tells both
(and a density schedule) which training step is next, so a resumed run draws what an
uninterrupted one would. They live on the root as plain attributes (not in ``state_dict``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .. import rng
from ..errors import ModelError
from ..nn import SubnetMixin, global_topk_masks
from ..nn.topk import capturing


def masked_layers(model: nn.Module) -> list[tuple[str, SubnetMixin]]:
    """The subnet layers (SubnetConv2d / SubnetLinear), in ``named_modules`` order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SubnetMixin)]


class GlobalTopK:
    """Forward pre-hook on the root: one top-k of |scores| across all subnet layers.

    Sets every subnet layer's ``mask_override`` to its share of the global mask. In training
    mode it recomputes before every forward (scores move each step); in eval mode it recomputes
    only when some layer's scores changed (version counter, storage or device), so repeated
    evaluation reuses the masks.
    """

    def __init__(self, density: float):
        self.density = float(density)
        self._key: tuple | None = None

    def refresh(self, model: nn.Module, *, force: bool) -> None:
        layers = [layer for _, layer in masked_layers(model)]
        if not layers:
            return
        if capturing():  # torch.jit.trace / torch.export: the masks as graph ops, no cache kept
            for layer, mask in zip(layers, global_topk_masks([layer.scores for layer in layers], self.density)):
                layer.mask_override = mask
            self._key = None  # the next eager forward recomputes (these masks belong to the recording)
            return
        key = tuple((layer.scores._version, layer.scores.data_ptr(), layer.scores.device) for layer in layers)
        if not force and key == self._key:
            return
        for layer, mask in zip(layers, global_topk_masks([layer.scores for layer in layers], self.density)):
            layer.mask_override = mask
        self._key = key

    def __call__(self, model: nn.Module, args) -> None:
        self.refresh(model, force=model.training)


class SupermaskSampler:
    """Forward pre-hook on the root: before each training forward, every supermask layer's
    ``mask_sample`` := Bernoulli(sigmoid(scores)), drawn on the CPU from the generator of
    (seed, "supermask", step). ``step`` is set by the search (``set_step``) so that a resumed
    run draws exactly the masks an uninterrupted one would."""

    def __init__(self, seed: int):
        self.seed, self.step = seed, 0

    def __call__(self, model: nn.Module, args) -> None:
        if not model.training:
            return
        gen = rng.torch_generator(self.seed, "supermask", self.step)
        for _, layer in masked_layers(model):
            if layer.sampled:
                u = torch.rand(layer.scores.shape, generator=gen).to(layer.scores.device)
                with torch.no_grad():
                    layer.mask_sample = (u < torch.sigmoid(layer.scores)).to(layer.weight.dtype)


def set_step(model: nn.Module, step: int) -> None:
    """Tell the model's step-dependent hooks (the supermask sampler, a density schedule) which
    training step is next."""
    sampler = getattr(model, "_popcli_supermask", None)
    if sampler is not None:
        sampler.step = step
    schedule = getattr(model, "_popcli_density_schedule", None)
    if schedule is not None:
        schedule(model, step)


def enable_global_topk(model: nn.Module, density: float) -> GlobalTopK:
    """Rank all subnet layers of ``model`` together from now on (see GlobalTopK)."""
    if getattr(model, "_popcli_global_topk", None) is not None:
        raise ModelError("global top-k is already enabled on this model")
    hook = GlobalTopK(density)
    model.register_forward_pre_hook(hook)
    model._popcli_global_topk = hook  # a plain attribute: not in state_dict
    hook.refresh(model, force=True)
    return hook


def refresh_global_masks(model: nn.Module) -> bool:
    """Bring the global masks up to date with the current scores (e.g. after an optimizer step,
    before reading ``layer.mask()`` for an artifact). False when global top-k is not enabled."""
    hook = getattr(model, "_popcli_global_topk", None)
    if hook is None:
        return False
    hook.refresh(model, force=False)
    return True
