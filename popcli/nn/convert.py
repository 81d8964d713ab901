"""Convert any module built from Conv2d / Linear / BatchNorm into subnet layers, and back.

``to_subnet_layers`` turns a torch model (torchvision's ResNets, a custom nn.Sequential, ...) into one
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

import difflib
from typing import Callable, Collection

import torch
import torch.nn as nn

from ..errors import ModelError
from .attention import SubnetMultiheadAttention
from .layers import SubnetConv2d, SubnetLinear, SubnetMixin

KeepDense = Callable[[str, nn.Module], bool] | Collection[str] | None
_Convert = Callable[[str, nn.Module], "nn.Module | None"]


def _keep_fn(keep_dense: KeepDense, root: nn.Module) -> Callable[[str, nn.Module], bool]:
    """Normalize ``keep_dense`` to a predicate over (qualified name, module); names are checked to
    be Conv2d/Linear/MultiheadAttention layers of ``root`` (as PEFT refuses unknown target modules)."""
    if keep_dense is None:
        return lambda name, module: False
    if callable(keep_dense):
        return keep_dense
    if isinstance(keep_dense, str):  # a lone name, not a collection of characters
        keep_dense = [keep_dense]
    names = set(keep_dense)
    modules = dict(root.named_modules())
    layers = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention))]
    for name in sorted(names, key=str):
        if name not in modules:
            close = difflib.get_close_matches(str(name), layers, n=3)
            hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"its layers: {_first(layers)}"
            raise ModelError(f"keep_dense names {name!r}, which is not a layer of this model; {hint}")
        if name not in layers:
            raise ModelError(f"keep_dense names {name!r}, a {type(modules[name]).__name__}: name its Conv2d/Linear/"
                             f"MultiheadAttention layers, or pass a callable (name, module) -> bool")
    return lambda name, module: name in names


def _first(names: list[str], count: int = 6) -> str:
    return ", ".join(names[:count]) + (f", ... ({len(names)} in all)" if len(names) > count else "") or "none"


def _plain(module: nn.Conv2d | nn.Linear, device: torch.device, bias: bool = False) -> nn.Conv2d | nn.Linear:
    """A trainable copy of a Conv2d/Linear on ``device`` (weight, and the bias with ``bias``, copied
    unless either is meta; zero otherwise). Bias-free unless ``bias`` and ``module`` has one.

    Built on meta and then materialized: torch's constructor init would draw from the global RNG.
    """
    bias = bias and module.bias is not None
    if isinstance(module, nn.Conv2d):
        new = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                        module.dilation, module.groups, bias=bias, padding_mode=module.padding_mode, device="meta")
    else:
        new = nn.Linear(module.in_features, module.out_features, bias=bias, device="meta")
    new = new.to_empty(device=device)
    if device.type == "meta":
        return new
    with torch.no_grad():
        for key in ("weight", "bias") if bias else ("weight",):
            source = getattr(module, key)
            getattr(new, key).copy_(source.detach()) if source.device.type != "meta" else getattr(new, key).zero_()
    return new


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _drop_affine(norm: nn.Module) -> nn.Module:
    """LayerNorm / GroupNorm without gamma/beta (their functional forms accept None)."""
    norm.weight, norm.bias = None, None
    if isinstance(norm, nn.LayerNorm):
        norm.elementwise_affine = False
    else:
        norm.affine = False
    return norm


def _attention(name: str, mha: nn.MultiheadAttention, density: float, keep: Callable, bias: bool,
               device: torch.device) -> nn.Module | None:
    """A SubnetMultiheadAttention for ``mha`` (plain projections when kept dense); None when not convertible."""
    if not SubnetMultiheadAttention.convertible(mha):
        return None  # left alone: the caller's report names it unhandled
    new = SubnetMultiheadAttention.from_attention(mha, density, bias)
    if keep(name, mha):
        new.in_proj, new.out_proj = _plain(new.in_proj, device, bias), _plain(new.out_proj, device, bias)
    return new


def _subnet_leaf(name: str, module: nn.Module, density: float, keep: Callable, nonaffine: bool, bias: bool,
                 device: torch.device) -> nn.Module | None:
    """The replacement of one module, or None to leave it (and recurse into its children)."""
    if isinstance(module, (SubnetMixin, SubnetMultiheadAttention)):
        return module  # already converted: left as it is, children included
    if isinstance(module, nn.MultiheadAttention):
        return _attention(name, module, density, keep, bias, device)
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if keep(name, module):
            return _plain(module, device, bias)
        if isinstance(module, nn.Conv2d):
            return SubnetConv2d.from_conv(module, density, bias)
        return SubnetLinear.from_linear(module, density, bias)
    if nonaffine and isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        # Fresh running stats: without gamma/beta the source's statistics would not mean the same.
        return type(module)(module.num_features, eps=module.eps, momentum=module.momentum, affine=False,
                            track_running_stats=module.track_running_stats)
    if nonaffine and isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        return _drop_affine(module)
    return None


def _materialize(root: nn.Module, device: torch.device) -> None:
    """Parameters still on meta (biases kept, affine norms, class tokens, ...) -> zeros on ``device``
    (norms: their deterministic reset, gamma 1 / beta 0 / fresh statistics). The caller fills
    them (``popcli.models.init_weights``); buffers of other modules cannot be rebuilt and stay."""
    for module in root.modules():
        own = [t for t in module._parameters.values() if t is not None and t.device.type == "meta"]
        if not own and not (isinstance(module, _NORMS) and any(
                b is not None and b.device.type == "meta" for b in module._buffers.values())):
            continue
        for key, tensor in module._parameters.items():
            if tensor is not None and tensor.device.type == "meta":
                module._parameters[key] = nn.Parameter(torch.zeros(tensor.shape, dtype=tensor.dtype, device=device),
                                                       requires_grad=tensor.requires_grad)
        if isinstance(module, _NORMS):
            for key, tensor in module._buffers.items():
                if tensor is not None and tensor.device.type == "meta":
                    module._buffers[key] = torch.zeros(tensor.shape, dtype=tensor.dtype, device=device)
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.track_running_stats:
                module.reset_running_stats()
            if getattr(module, "weight", None) is not None:
                with torch.no_grad():
                    module.weight.fill_(1.0)


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
                f"materializes parameters and norm statistics, not other buffers; build that layer on a real "
                f"device or replace it before converting")


def to_subnet_layers(module: nn.Module, density: float, *, keep_dense: KeepDense = None,
                     nonaffine_norms: bool = True, keep_biases: bool = False,
                     device: str | torch.device = "cpu") -> nn.Module:
    """Conv2d/Linear -> SubnetConv2d/SubnetLinear at ``density``, packed nn.MultiheadAttention ->
    SubnetMultiheadAttention (both projections masked): the structural step of ``popcli.subnetify``
    (which adds the portable weights and the parameter policies).

    ``keep_biases=False`` removes the biases of converted layers; True keeps them (copied, or
    zero on meta). ``nonaffine_norms`` replaces every BatchNorm1d/2d by a non-affine one of the
    same size (fresh running stats) and removes LayerNorm/GroupNorm gamma/beta; False leaves
    norms alone. Other parameters still on meta are materialized as zeros (see
    ``_materialize``): structure only, ``popcli.models.init_weights`` fills values. ``keep_dense`` selects
    Conv2d/Linear layers that stay plain (real, trainable, bias dropped): a callable
    (qualified_name, module) -> bool, or a collection of qualified names (``named_modules``) of
    Conv2d/Linear/MultiheadAttention layers (any other name is a ModelError).
    Existing subnet layers are left as they are. Converts in place and returns the root (a new
    object when the root itself is a Conv2d/Linear/BatchNorm). New layers go to ``device``:
    the CPU (real, zero weights), or "meta" to build a structure that a loader fills in.
    """
    if not 0.0 < density <= 1.0:
        raise ModelError(f"density must be in (0, 1], got {density}")
    keep = _keep_fn(keep_dense, module)
    device = torch.device(device)
    converted = _replace(module, lambda name, m: _subnet_leaf(name, m, density, keep, nonaffine_norms, keep_biases, device),
                         device)
    if device.type != "meta":
        _materialize(converted, device)
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
    norms stay (``fold.fold_batchnorm`` folds them, which changes the last bits). Converts in place and
    returns the root (new when the root is a subnet layer)."""
    return _replace(module, lambda name, m: _baked(m) if isinstance(m, SubnetMixin) else None,
                    torch.get_default_device())


def densify(module: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """SubnetConv2d/SubnetLinear -> plain bias-free Conv2d/Linear with a trainable copy of the raw
    (unmasked) weight: the dense-training baseline. (``to_conv``/``to_linear`` bake the mask
    instead.) Converts in place and returns the root (new when the root is a subnet layer)."""
    device = torch.device(device)
    return _replace(module, lambda name, m: _plain(m, device) if isinstance(m, SubnetMixin) else None, device)
