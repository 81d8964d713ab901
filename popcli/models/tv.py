"""torchvision's classification models converted to subnet layers: ResNets (the paper's ImageNet
experiments), MobileNetV3, EfficientNet, ConvNeXt, RegNet, ViT, and a small ViT for 32x32 inputs.

``torchvision.models.<name>(weights=None, num_classes=...)`` is built under
``torch.device("meta")``: its constructor allocates nothing and draws no random numbers (its
own init runs on meta tensors). ``to_subnet_layers`` then replaces every layer with a real CPU one:
SubnetConv2d/SubnetLinear at ``density`` for edge-popup, plain bias-free trainable layers for
the dense baseline (``density=None``); batch norms become non-affine in both. torchvision's
constructors take no layer factories, so these builders use the contract's ``density`` and
ignore ``conv_layer``/``linear_layer``/``norm_layer``; they take ``model.biases``/``model.norms``
(``models.policy``: biases dropped and norms non-affine by default, as the paper's models).
Attention is masked through ``SubnetMultiheadAttention``. ``width`` is fixed by the definition
(tv_wide_resnet50_2 is the wide one). Another ``in_channels`` rebuilds the first conv. Layer names
are torchvision's (conv1, layer1.0.conv1, ..., fc; encoder.layers.encoder_layer_0.self_attention.in_proj, ...).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ModelError
from ..nn import to_subnet_layers
from .policy import check_unhandled
from .registry import register_alias, register_model


def _with_in_channels(model: nn.Module, in_channels: int) -> None:
    """The first Conv2d (the stem) rebuilt for ``in_channels`` inputs, same geometry: [B, C, H, W] in."""
    name, stem = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    model.set_submodule(name, nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding,
                                        stem.dilation, stem.groups, bias=stem.bias is not None,
                                        padding_mode=stem.padding_mode))


def torchvision_model(name: str, *, in_channels: int, num_classes: int, width: float, density: float | None,
                      biases: str = "drop", norms: str = "nonaffine", **kwargs) -> nn.Module:
    """torchvision.models.<name>(**kwargs) on the meta device -> real subnet (or plain) layers.

    ``biases``/``norms``: the policies of ``popcli.models.policy`` ("frozen" and "train" biases both keep
    them in the structure; their values are drawn by ``policy.init_params``).
    """
    if width != 1.0:
        raise ModelError(f"{name}: model.width={width} is not supported for torchvision models; set model.width=1 "
                         f"(tv_wide_resnet50_2 is the wide variant)")
    import torchvision  # here, not at import: fc/convN models and artifacts of them need no torchvision

    make = getattr(torchvision.models, name)
    weights = {} if isinstance(make, type) else {"weights": None}  # a class (VisionTransformer) takes no weights=
    try:
        with torch.device("meta"):
            model = make(**weights, num_classes=num_classes, **kwargs)
    except NotImplementedError:  # a constructor that computes on tensors (RegNet's widths): build it for real,
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):  # its init's draws undone; popcli redraws all
            model = make(**weights, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        with torch.device("meta"):
            _with_in_channels(model, in_channels)
    device = torch.get_default_device()  # the caller's: cpu, or meta when a loader builds the structure
    convert = {"nonaffine_norms": norms == "nonaffine", "keep_biases": biases != "drop", "device": device}
    if density is None:  # dense baseline: every weight layer plain and trainable
        converted = to_subnet_layers(model, 1.0, keep_dense=lambda layer_name, layer: True, **convert)
    else:
        converted = to_subnet_layers(model, density, **convert)
    check_unhandled(converted, allow_unhandled=False)  # every layer of these definitions must be maskable
    return converted


def _register(registry_name: str, tv_name: str, description: str, image_size: bool = False, **fixed) -> None:
    """Register torchvision.models.<tv_name> (``image_size``: pass the data's size, as ViTs need)."""
    @register_model(registry_name, description)
    def build(*, in_channels: int, image_size: int, num_classes: int, width: float, hidden: list[int],
              batchnorm: bool, conv_layer, linear_layer, norm_layer, density: float | None, biases: str = "drop",
              norms: str = "nonaffine") -> nn.Module:
        extra = {**fixed, **({"image_size": image_size} if wants_size else {})}
        return torchvision_model(tv_name, in_channels=in_channels, num_classes=num_classes, width=width,
                                 density=density, biases=biases, norms=norms, **extra)

    wants_size = image_size
    build.__name__ = build.__qualname__ = registry_name
    build.popcli_policies = True  # build_architecture passes model.biases / model.norms


_register("tv_resnet18", "resnet18", "torchvision ResNet-18 (ImageNet layout, 7x7 stem + max-pool) via subnetify")
_register("tv_resnet50", "resnet50", "torchvision ResNet-50 via subnetify (the paper's ImageNet model)")
_register("tv_resnet101", "resnet101", "torchvision ResNet-101 via subnetify")
_register("tv_wide_resnet50_2", "wide_resnet50_2", "torchvision Wide ResNet-50-2 via subnetify")
_register("tv_mobilenet_v3_small", "mobilenet_v3_small", "torchvision MobileNetV3-Small via subnetify")
_register("tv_efficientnet_b0", "efficientnet_b0", "torchvision EfficientNet-B0 via subnetify")
_register("tv_convnext_tiny", "convnext_tiny", "torchvision ConvNeXt-Tiny via subnetify (LayerNorm, layer scale)")
_register("tv_regnet_y_400mf", "regnet_y_400mf", "torchvision RegNetY-400MF via subnetify")
_register("tv_vit_b_16", "vit_b_16", "torchvision ViT-B/16 via subnetify (masked attention); image_size % 16 == 0",
          image_size=True)
_register("tv_vit_tiny", "VisionTransformer", "a small ViT for 32x32 inputs (patch 4, 6 layers, 3 heads, width 192) "
          "via subnetify", image_size=True, patch_size=4, num_layers=6, num_heads=3, hidden_dim=192, mlp_dim=768)

# the names before 0.3 (every torchvision model is tv_*): accepted, recorded as the new name, removed in 0.4
OLD_NAMES = {"resnet50": "tv_resnet50", "resnet101": "tv_resnet101", "wide_resnet50_2": "tv_wide_resnet50_2",
             "vit_tiny": "tv_vit_tiny"}
for _old, _new in OLD_NAMES.items():
    register_alias(_old, _new)
