"""Convert any module built from Conv2d / Linear / BatchNorm into subnet layers, and back.

``subnetify`` turns a torch model (torchvision's ResNets, a custom nn.Sequential, ...) into one
whose Conv2d/Linear are ``SubnetConv2d``/``SubnetLinear`` and whose batch norms are non-affine;
``densify`` turns subnet layers into plain trainable layers (the dense baseline). Both accept
models built on the meta device (``with torch.device("meta"): ...``, so that foreign
constructors allocate nothing and draw no random numbers): every new layer is a real CPU layer,
and anything still on meta afterwards is a ModelError naming the layer type popcli cannot
convert. Biases are dropped (edge-popup masks weights only; the paper's models have none).
Weights are copied from real source layers and left at zero for meta ones: the caller fills
them (``popcli.models.init_weights``). This module stops at structure: it draws nothing.
"""

from __future__ import annotations

from typing import Callable, Collection

import torch
import torch.nn as nn

from ..errors import ModelError
from .layers import SubnetConv2d, SubnetLinear, SubnetMixin

KeepDense = Callable[[str, nn.Module], bool] | Collection[str] | None
_Convert = Callable[[str, nn.Module], "nn.Module | None"]


def _keep_fn(keep_dense: KeepDense) -> Callable[[str, nn.Module], bool]:
    """Normalize ``keep_dense`` to a predicate over (qualified name, module)."""
    if keep_dense is None:
        return lambda name, module: False
    if callable(keep_dense):
        return keep_dense
    if isinstance(keep_dense, str):  # a lone name, not a collection of characters
        keep_dense = [keep_dense]
    names = set(keep_dense)
    return lambda name, module: name in names


def _plain(module: nn.Conv2d | nn.Linear, device: torch.device) -> nn.Conv2d | nn.Linear:
    """A trainable, bias-free copy of a Conv2d/Linear on ``device`` (weight copied unless either is meta).

    Built on meta and then materialized: torch's constructor init would draw from the global RNG.
    """
    if isinstance(module, nn.Conv2d):
        new = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                        module.dilation, module.groups, bias=False, padding_mode=module.padding_mode, device="meta")
    else:
        new = nn.Linear(module.in_features, module.out_features, bias=False, device="meta")
    new = new.to_empty(device=device)
    if device.type == "meta":
        return new
    with torch.no_grad():
        if module.weight.device.type == "meta":
            new.weight.zero_()
        else:
            new.weight.copy_(module.weight.detach())
    return new


def _subnet_leaf(name: str, module: nn.Module, density: float, keep: Callable, norm: str,
                 device: torch.device) -> nn.Module | None:
    """The replacement of one module, or None to leave it (and recurse into its children)."""
    if isinstance(module, SubnetMixin):
        return None
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if keep(name, module):
            return _plain(module, device)
        if isinstance(module, nn.Conv2d):
            return SubnetConv2d.from_conv(module, density)
        return SubnetLinear.from_linear(module, density)
    if norm == "nonaffine" and isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        # Fresh running stats: without gamma/beta the source's statistics would not mean the same.
        return type(module)(module.num_features, eps=module.eps, momentum=module.momentum, affine=False,
                            track_running_stats=module.track_running_stats)
    return None


def _replace(root: nn.Module, convert: _Convert, device: torch.device) -> nn.Module:
    """Depth-first replacement; a module shared by several parents maps to one replacement."""
    done: dict[int, nn.Module] = {}

    def visit(module: nn.Module, prefix: str) -> nn.Module:
        if id(module) in done:
            return done[id(module)]
        new = convert(prefix, module)
        if new is None:
            new = module
            for child_name, child in list(module.named_children()):
                setattr(module, child_name, visit(child, f"{prefix}.{child_name}" if prefix else child_name))
        done[id(module)] = new
        return new

    with torch.device(device):  # new layers go to ``device`` whatever block the caller is in
        return visit(root, "")


def _check_materialized(module: nn.Module) -> None:
    """Raise ModelError naming the first layer that still holds meta tensors."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.device.type == "meta":
            owner_name = name.rpartition(".")[0]
            owner = module.get_submodule(owner_name)
            raise ModelError(
                f"layer {owner_name or '<root>'} ({type(owner).__name__}) is still on the meta device: subnetify "
                f"materializes only Conv2d, Linear and BatchNorm1d/2d (with norm='nonaffine'); build that layer "
                f"on a real device or replace it before converting")


def subnetify(module: nn.Module, density: float, *, keep_dense: KeepDense = None, norm: str = "nonaffine",
              device: str | torch.device = "cpu") -> nn.Module:
    """Conv2d/Linear -> SubnetConv2d/SubnetLinear at ``density`` (biases dropped).

    ``norm="nonaffine"`` replaces every BatchNorm1d/2d by a non-affine one of the same size
    (fresh running stats); ``norm="keep"`` leaves batch norms alone. ``keep_dense`` selects
    Conv2d/Linear layers that stay plain (real, trainable, bias dropped): a callable
    (qualified_name, module) -> bool, or a collection of qualified names (``named_modules``).
    Existing subnet layers are left as they are. Converts in place and returns the root (a new
    object when the root itself is a Conv2d/Linear/BatchNorm). New layers go to ``device``:
    the CPU (real, zero weights), or "meta" to build a structure that a loader fills in.
    """
    if norm not in ("nonaffine", "keep"):
        raise ModelError(f"norm must be 'nonaffine' or 'keep', got {norm!r}")
    if not 0.0 < density <= 1.0:
        raise ModelError(f"density must be in (0, 1], got {density}")
    keep = _keep_fn(keep_dense)
    device = torch.device(device)
    converted = _replace(module, lambda name, m: _subnet_leaf(name, m, density, keep, norm, device), device)
    if device.type != "meta":
        _check_materialized(converted)
    return converted


def _baked(layer: SubnetMixin) -> nn.Conv2d | nn.Linear:
    """A frozen plain layer holding exactly the bits the subnet layer multiplies in eval: w * mask."""
    plain = _plain(layer, torch.device("meta")).to_empty(device=layer.weight.device)
    with torch.no_grad():
        was_training = layer.training
        layer.eval()
        plain.weight = nn.Parameter(layer._cached_weight().clone(), requires_grad=False)
        layer.train(was_training)
        if getattr(layer, "bias", None) is not None:
            plain.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    return plain.train(was_training)


def bake_subnets(module: nn.Module) -> nn.Module:
    """SubnetConv2d/SubnetLinear -> frozen plain Conv2d/Linear holding ``w * mask`` (and the bias, if
    any): the found subnetwork as ordinary layers, same logits bit for bit, dense speed. Batch
    norms stay (``popcli.bake`` folds them, which changes the last bits). Converts in place and
    returns the root (new when the root is a subnet layer)."""
    return _replace(module, lambda name, m: _baked(m) if isinstance(m, SubnetMixin) else None,
                    torch.get_default_device())


def densify(module: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """SubnetConv2d/SubnetLinear -> plain bias-free Conv2d/Linear with a trainable copy of the raw
    (unmasked) weight: the dense-training baseline. (``to_conv``/``to_linear`` bake the mask
    instead.) Converts in place and returns the root (new when the root is a subnet layer)."""
    device = torch.device(device)
    return _replace(module, lambda name, m: _plain(m, device) if isinstance(m, SubnetMixin) else None, device)
