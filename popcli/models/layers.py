"""Layer factories handed to the model builders (timm-style ``conv_layer=``, no globals).

``layer_factories(density)`` gives the keyword arguments ``conv_layer``, ``linear_layer``,
``norm_layer`` and ``density`` of the builder contract (see ``registry``): subnet layers at
``density``, or plain bias-free trainable layers for ``density=None`` (the dense baseline).
Nothing here draws random numbers: weights start at zero and ``init_weights`` fills them.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn

from ..nn import NonAffineBatchNorm2d, SubnetConv2d, SubnetLinear


def _materialized(layer: nn.Module) -> nn.Module:
    """Built on meta (torch's init would use the global RNG), moved to the default device, zeroed."""
    layer = layer.to_empty(device=torch.get_default_device())
    if layer.weight.device.type != "meta":
        nn.init.zeros_(layer.weight)
    return layer


def plain_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """A bias-free trainable Conv2d with a zero weight."""
    return _materialized(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False, device="meta"))


def plain_linear(in_features: int, out_features: int) -> nn.Linear:
    """A bias-free trainable Linear with a zero weight."""
    return _materialized(nn.Linear(in_features, out_features, bias=False, device="meta"))


def layer_factories(density: float | None) -> dict[str, Any]:
    """The layer keyword arguments of a builder call for ``density`` (None: dense baseline)."""
    if density is None:
        conv_layer, linear_layer = plain_conv, plain_linear
    else:
        conv_layer = functools.partial(SubnetConv2d, density=density)
        linear_layer = functools.partial(SubnetLinear, density=density)
    return {"conv_layer": conv_layer, "linear_layer": linear_layer, "norm_layer": NonAffineBatchNorm2d,
            "density": density}


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier (rounded), at least 1."""
    return max(1, int(round(channels * width)))

