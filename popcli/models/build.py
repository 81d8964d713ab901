"""Building a recipe's model: the registry's builder, dense first/last layers, portable weights.

``build_model`` = registry builder (with the method's layer factories) -> dense first/last
layers -> portable weights and scores (``init_weights``) -> optional global top-k or the
supermask sampler (``hooks``). Qualified layer names (``named_modules``) key the weight
generator, so the same recipe builds bit-identical weights anywhere. Nothing here touches the
global RNGs: weights come from ``rng.generate_weight`` and scores from per-layer
``rng.torch_generator`` streams. ``build_architecture`` is the same structure without any draw
(what a loader fills from an artifact, built on the meta device).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .. import methods, rng
from ..methods import iterand
from ..errors import ModelError
from ..methods import subspace
from ..nn import SubnetMixin, densify
from ..recipe import ModelConfig, SearchConfig
from . import policy
from .hooks import SupermaskSampler, enable_global_topk, masked_layers, refresh_global_masks
from .layers import layer_factories
from .lookup import get_model_builder
from .registry import accepts


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d / Linear (subnet or plain), in ``named_modules`` order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def init_weights(model: nn.Module, seed: int, init: str, density: float) -> None:
    """Every Conv2d/Linear weight := ``rng.generate_weight(seed, name, shape, init, density)``;
    subnet scores := ``reset_scores`` from the ``("scores", name)`` stream of ``seed`` (around
    logit(density) for supermask layers, so that they start keeping about ``density``)."""
    center = math.log(density / (1 - density)) if 0 < density < 1 else 0.0
    for name, layer in weight_layers(model):
        weight = rng.generate_weight(seed, name, layer.weight.shape, init, density)
        with torch.no_grad():
            layer.weight.copy_(weight)
        if isinstance(layer, SubnetMixin):
            layer.reset_scores(rng.torch_generator(seed, "scores", name), center if layer.sampled else 0.0)


def regenerate_weights(model: nn.Module, seed: int, init: str, density: float) -> dict[str, torch.Tensor]:
    """Fresh portable weights of the subnet layers {name: float32 CPU tensor}: what an artifact
    regenerates from its seed (with IteRand, each weight's draw of ``weight_draws``: methods.iterand).
    Plain (dense) layers train their weights and are not included."""
    return {name: rng.redrawn_weight(seed, name, layer.weight.shape, init, density, iterand.draws_of(layer))
            for name, layer in masked_layers(model)}


@torch.no_grad()
def count_params(model: nn.Module) -> tuple[int, int]:
    """(params_total, params_kept) over the weights of all Conv2d/Linear layers: a subnet layer
    keeps its mask count, a plain (dense) layer all of its weights. Biases and BN statistics are
    not counted. For a pure edge-popup model this is exactly the subnet layers' weights."""
    refresh_global_masks(model)
    total = kept = 0
    for _, layer in weight_layers(model):
        total += layer.weight.numel()
        kept += int(layer.mask().sum()) if isinstance(layer, SubnetMixin) else layer.weight.numel()
    return total, kept


def _keep_dense(model: nn.Module, first: bool, last: bool) -> nn.Module:
    """Replace the first / last Conv2d-or-Linear (``named_modules`` order) by a plain layer."""
    layers = weight_layers(model)
    chosen = ([layers[0]] if first and layers else []) + ([layers[-1]] if last and layers else [])
    for name, layer in chosen:
        if not isinstance(layer, SubnetMixin):
            continue
        device = torch.get_default_device()
        if name == "":  # the whole model is one layer
            model = densify(layer, device)
        else:
            model.set_submodule(name, densify(layer, device))
    return model


def input_size(shape) -> int | tuple[int, int]:
    """A builder's ``image_size`` for an input of shape [C, H, W]: H when square, else (H, W)."""
    height, width = int(shape[1]), int(shape[2])
    return height if height == width else (height, width)


def init_density(search_cfg: SearchConfig) -> float:
    """The density the weights are drawn with (scaled_* inits): the search's, 1 for dense training."""
    return 1.0 if search_cfg.method == "dense" else search_cfg.density


def build_architecture(model_cfg: ModelConfig, search_cfg: SearchConfig, *, in_channels: int, image_size: int,
                       num_classes: int) -> nn.Module:
    """The recipe's layers with zero weights and scores (no random draws, no hooks).

    Masked methods: subnet layers at ``search_cfg.density`` set up by ``methods.configure``
    (supermask: sampled mode; biprop, signed-supermask: their layer rules); "dense": the same
    architecture with plain trainable bias-free layers.
    ``search_cfg.dense_first`` / ``dense_last`` applied.
    """
    masked = methods.get_method(search_cfg.method).masked
    if masked and not 0.0 < search_cfg.density <= 1.0:
        raise ModelError(f"search.density must be in (0, 1], got {search_cfg.density}")
    builder = get_model_builder(model_cfg.arch)
    # builders that convert foreign definitions (torchvision, a user's plain module) take the bias/norm policies
    extra = {"biases": model_cfg.biases, "norms": model_cfg.norms} if getattr(builder, "popcli_policies", False) else {}
    if accepts(builder, "input_shape"):  # the spelling of create_model / subnetify, for builders that name it
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        extra["input_shape"] = (int(in_channels), int(height), int(width))
    model = builder(in_channels=in_channels, image_size=image_size, num_classes=num_classes, width=model_cfg.width,
                    hidden=list(model_cfg.hidden), batchnorm=model_cfg.batchnorm,
                    **layer_factories(search_cfg.density if masked else None), **extra)
    model = _keep_dense(model, search_cfg.dense_first, search_cfg.dense_last)
    methods.configure([layer for _, layer in masked_layers(model)], search_cfg.method)
    if search_cfg.method == "subspace":  # z is part of the architecture; its projection needs the seed (build_model)
        subspace.add_coordinates(model, search_cfg.subspace_dim)
    return model


def build_model(model_cfg: ModelConfig, search_cfg: SearchConfig, *, in_channels: int, image_size: int,
                num_classes: int, seed: int) -> nn.Module:
    """The recipe's model with its portable random weights, ready to search (CPU, train mode).

    ``build_architecture``, then weights from the portable generator (drawn with
    ``init_density``) and scores from the seed, then the hooks the recipe needs: global top-k
    (edge-popup with ``search.global_topk``), the supermask sampler, or the subspace method's z
    and projection (``methods.subspace.attach``).
    """
    model = build_architecture(model_cfg, search_cfg, in_channels=in_channels, image_size=image_size,
                               num_classes=num_classes)
    init_weights(model, seed, model_cfg.init, init_density(search_cfg))
    policy.init_params(model, seed, model_cfg.biases, model_cfg.params)
    if methods.get_method(search_cfg.method).topk and search_cfg.global_topk:
        enable_global_topk(model, search_cfg.density)
    if search_cfg.method == "subspace":  # w = w0 + P z: z (zeros) on the root, the projection from the seed
        subspace.attach(model, seed, search_cfg.subspace_dim, search_cfg.subspace_dtype)
    if search_cfg.method == "supermask":
        model._popcli_supermask = SupermaskSampler(seed)  # a plain attribute: not in state_dict
        model.register_forward_pre_hook(model._popcli_supermask)
    return model.train()
