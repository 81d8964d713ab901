"""The paper's models: an MLP (``fc``) and the VGG-like Conv2/4/6/8, all with a width multiplier.

ConvN (Ramanujan et al. 2020, after Frankle & Carbin 2019): N/2 blocks of two 3x3 convs
(padding 1) with 64, 128, 256, 512 channels, each block followed by a 2x2 max-pool; then
flatten and FC 256, 256, num_classes. ReLU after every hidden layer, no biases anywhere. Channel
and hidden sizes are multiplied by ``width`` (the output layer is not). With ``batchnorm`` a
non-affine BN follows every hidden conv (``norm_layer``) and hidden FC (BatchNorm1d); the paper
uses none. The reference code writes the FC head as 1x1 convs; plain Linear layers compute the
same thing. Input channels, image size and class count follow the dataset; ``image_size`` is an int for
square images or (H, W); sizes that do not divide (28 -> 14 -> 7 -> 3) are floored exactly as
MaxPool2d does, per side.
Layer names (they key the weight generator): conv1..convN, fc1, fc2, out (fc: fc1.., out).
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from ..errors import ModelError
from ..nn import NonAffineBatchNorm1d
from .layers import scaled
from .registry import register_model

_BLOCKS = (64, 128, 256, 512)  # channels of the 2-conv blocks, in order


def _sides(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) of ``image_size`` (an int means a square image)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def _mlp(in_features: int, hidden: list[int], num_classes: int, batchnorm: bool,
         linear_layer) -> list[tuple[str, nn.Module]]:
    """[Linear (+BN1d) + ReLU] per hidden size, then the output Linear: [B, in] -> [B, classes]."""
    layers: list[tuple[str, nn.Module]] = []
    for i, units in enumerate(hidden, start=1):
        layers.append((f"fc{i}", linear_layer(in_features, units)))
        if batchnorm:
            layers.append((f"fcbn{i}", NonAffineBatchNorm1d(units)))
        layers.append((f"fcrelu{i}", nn.ReLU(inplace=True)))
        in_features = units
    layers.append(("out", linear_layer(in_features, num_classes)))
    return layers


@register_model("fc", "MLP: flatten, hidden sizes from model.hidden (x width), ReLU, optional non-affine BN")
def fc(*, in_channels: int, image_size: int, num_classes: int, width: float, hidden: list[int], batchnorm: bool,
       conv_layer, linear_layer, norm_layer, density: float | None) -> nn.Module:
    """[B, C, H, W] -> flatten [B, C*H*W] -> MLP -> [B, num_classes]."""
    units = [scaled(h, width) for h in hidden]
    height, image_width = _sides(image_size)
    layers = [("flatten", nn.Flatten())]
    layers += _mlp(in_channels * height * image_width, units, num_classes, batchnorm, linear_layer)
    return nn.Sequential(OrderedDict(layers))


def pooled_size(size: int, pools: int) -> int:
    """Spatial size after ``pools`` MaxPool2d(2) layers (floor, as torch computes it); 0 if too small."""
    for _ in range(pools):
        size = (size - 2) // 2 + 1 if size >= 2 else 0
    return size


def conv_net(blocks: int, *, in_channels: int, image_size: int, num_classes: int, width: float, batchnorm: bool,
             conv_layer, linear_layer, norm_layer) -> nn.Sequential:
    """Conv{2*blocks}: [B, C, H, W] -> blocks x (conv, conv, pool) -> FC 256, 256 -> [B, classes]."""
    sides = _sides(image_size)
    size, size_w = pooled_size(sides[0], blocks), pooled_size(sides[1], blocks)
    if min(size, size_w) < 1:
        raise ModelError(f"conv{2 * blocks} pools {blocks} times and needs images of at least {2 ** blocks} "
                         f"pixels a side, got {sides[0]}x{sides[1]}; pick a smaller convN or fc")
    layers: list[tuple[str, nn.Module]] = []
    channels, index = in_channels, 0
    for block in range(blocks):
        out_channels = scaled(_BLOCKS[block], width)
        for _ in range(2):
            index += 1
            layers.append((f"conv{index}", conv_layer(channels, out_channels, 3, stride=1, padding=1)))
            if batchnorm:
                layers.append((f"bn{index}", norm_layer(out_channels)))
            layers.append((f"relu{index}", nn.ReLU(inplace=True)))
            channels = out_channels
        layers.append((f"pool{block + 1}", nn.MaxPool2d(2)))
    layers.append(("flatten", nn.Flatten()))  # [B, channels, size, size_w] -> [B, channels*size*size_w]
    layers += _mlp(channels * size * size_w, [scaled(256, width)] * 2, num_classes, batchnorm, linear_layer)
    return nn.Sequential(OrderedDict(layers))


def _register_conv(blocks: int) -> None:
    name = f"conv{2 * blocks}"
    layout = " | ".join(f"{c},{c},pool" for c in _BLOCKS[:blocks])

    @register_model(name, f"paper's {name.capitalize()}: {layout} | FC 256,256,classes (x width), no biases")
    def build(*, in_channels: int, image_size: int, num_classes: int, width: float, hidden: list[int],
              batchnorm: bool, conv_layer, linear_layer, norm_layer, density: float | None) -> nn.Module:
        return conv_net(blocks, in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                        width=width, batchnorm=batchnorm, conv_layer=conv_layer, linear_layer=linear_layer,
                        norm_layer=norm_layer)

    build.__name__ = build.__qualname__ = name


for _blocks in (1, 2, 3, 4):
    _register_conv(_blocks)
