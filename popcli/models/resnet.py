"""The CIFAR ResNet-18 (He et al. 2016; the variant for 32x32 inputs used by the paper).

3x3 stride-1 stem conv and no max-pool (a 32x32 image keeps its resolution into the first
stage), BasicBlocks [2, 2, 2, 2] with 64, 128, 256, 512 channels (x width), stride 2 at the
first block of stages 2-4, BN (``norm_layer``, non-affine) after every conv, a 1x1 conv + BN
shortcut when the shape changes, global average pooling and one linear layer to the classes.
Built from the passed-in layer factories; no biases. Other image sizes work too (the pooling is
adaptive), 32x32 is what it is designed for. torchvision's ImageNet ResNets live in ``tv``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import scaled
from .registry import register_model


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)): [B, in, S, S] -> [B, out, S/stride, S/stride]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, conv_layer, norm_layer):
        super().__init__()
        self.conv1 = conv_layer(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = norm_layer(out_channels)
        self.conv2 = conv_layer(out_channels, out_channels, 3, stride=1, padding=1)
        self.bn2 = norm_layer(out_channels)
        self.shortcut = nn.Sequential()  # identity
        if stride != 1 or in_channels != out_channels:  # 1x1 projection when the shape changes
            self.shortcut = nn.Sequential(conv_layer(in_channels, out_channels, 1, stride=stride, padding=0),
                                          norm_layer(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """[B, C, 32, 32] -> stem [B, 64w, 32, 32] -> stages -> [B, 512w, 4, 4] -> pool -> [B, classes]."""

    def __init__(self, in_channels: int, num_classes: int, width: float, conv_layer, linear_layer, norm_layer):
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = conv_layer(in_channels, planes[0], 3, stride=1, padding=1)
        self.bn1 = norm_layer(planes[0])
        stages, channels = [], planes[0]
        for i, out_channels in enumerate(planes):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(channels, out_channels, stride, conv_layer, norm_layer),
                                        BasicBlock(out_channels, out_channels, 1, conv_layer, norm_layer)))
            channels = out_channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = linear_layer(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet18", "CIFAR ResNet-18 for 32x32 inputs (3x3 stem, no max-pool), non-affine BN, x width")
def resnet18(*, in_channels: int, image_size: int, num_classes: int, width: float, hidden: list[int],
             batchnorm: bool, conv_layer, linear_layer, norm_layer, density: float | None) -> nn.Module:
    return CifarResNet18(in_channels, num_classes, width, conv_layer, linear_layer, norm_layer)
