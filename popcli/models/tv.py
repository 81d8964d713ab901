"""torchvision's ImageNet ResNets, converted to subnet layers (the paper's ImageNet experiments).

``torchvision.models.<name>(weights=None, num_classes=...)`` is built under
``torch.device("meta")``: its constructor allocates nothing and draws no random numbers (its
own init runs on meta tensors). ``subnetify`` then replaces every layer with a real CPU one:
SubnetConv2d/SubnetLinear at ``density`` for edge-popup, plain bias-free trainable layers for
the dense baseline (``density=None``); batch norms become non-affine in both. torchvision's
constructors take no layer factories, so these builders use the contract's ``density`` and
ignore ``conv_layer``/``linear_layer``/``norm_layer``. The fc bias is dropped (edge-popup masks
weights only). ``width`` is fixed by the definition (wide_resnet50_2 is the wide one).
Layer names are torchvision's (conv1, layer1.0.conv1, ..., fc).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ModelError
from ..nn import subnetify
from .registry import register_model


def torchvision_model(name: str, *, in_channels: int, num_classes: int, width: float,
                      density: float | None) -> nn.Module:
    """torchvision.models.<name> on the meta device -> real CPU subnet (or plain) layers."""
    if width != 1.0:
        raise ModelError(f"{name}: model.width={width} is not supported for torchvision models; set model.width=1 "
                         f"(wide_resnet50_2 is the wide variant)")
    import torchvision  # here, not at import: fc/convN models and artifacts of them need no torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_channels != 3:  # same stem geometry for other channel counts: [B, C, S, S] -> [B, 64, S/2, S/2]
            stem = model.conv1
            model.conv1 = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding,
                                    bias=False)
    device = torch.get_default_device()  # the caller's: cpu, or meta when a loader builds the structure
    if density is None:  # dense baseline: every weight layer plain and trainable
        return subnetify(model, 1.0, keep_dense=lambda layer_name, layer: True, device=device)
    return subnetify(model, density, device=device)


def _register(registry_name: str, tv_name: str, description: str) -> None:
    @register_model(registry_name, description)
    def build(*, in_channels: int, image_size: int, num_classes: int, width: float, hidden: list[int],
              batchnorm: bool, conv_layer, linear_layer, norm_layer, density: float | None) -> nn.Module:
        return torchvision_model(tv_name, in_channels=in_channels, num_classes=num_classes, width=width,
                                 density=density)

    build.__name__ = build.__qualname__ = registry_name


_register("tv_resnet18", "resnet18", "torchvision ResNet-18 (ImageNet layout, 7x7 stem + max-pool) via subnetify")
_register("resnet50", "resnet50", "torchvision ResNet-50 via subnetify (the paper's ImageNet model)")
_register("resnet101", "resnet101", "torchvision ResNet-101 via subnetify")
_register("wide_resnet50_2", "wide_resnet50_2", "torchvision Wide ResNet-50-2 via subnetify")
