"""Bake a found subnetwork into a plain dense model for deployment: masks applied, batch norm
folded, dead units removed.

``bake(model)`` -> an ``torch.fx.GraphModule`` of ordinary Conv2d/Linear layers holding
``w * mask`` (the same bits the subnet layer multiplies in eval mode), with every eval-mode batch
norm that directly follows a conv/linear folded into it (``nn.fold``: float64, rounded once).
``prune_dead_units(graph_module)`` then removes output units (channels / neurons) that cannot
matter: all incoming weights zero (a constant output that is 0 after its activation, or that a
following Linear absorbs into its bias) or all outgoing weights zero. ``count(model, shape)``
gives parameters and FLOPs. The original model is never modified. Nothing here exports or prints.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PopcliError
from ..models import refresh_global_masks
from ..nn import SubnetMixin
from ..nn.fold import WEIGHTED, fold_batchnorm, single_user_module

# ops that act on each channel separately (and map a constant channel to a constant)
_CHANNELWISE_MODULES = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)
_CHANNELWISE_FUNCTIONS = (F.relu, torch.relu)


class BakeError(PopcliError):
    """The model cannot be baked (an architecture torch.fx cannot trace)."""


def _plain(layer: SubnetMixin) -> nn.Module:
    """A Conv2d/Linear holding the effective weight the subnet layer computes in eval mode (w * mask
    for edge-popup; a method's own product, e.g. biprop's alpha * sign(w) * mask)."""
    with torch.no_grad():
        effective = layer.effective_weight().detach()
    plain = layer.to_conv() if isinstance(layer, nn.Conv2d) else layer.to_linear()
    with torch.no_grad():
        plain.weight.copy_(effective)
    return plain


def _replace_subnets(model: nn.Module) -> nn.Module:
    for name, module in list(model.named_modules()):
        if isinstance(module, SubnetMixin):
            if name == "":
                return _plain(module)
            model.set_submodule(name, _plain(module))
    return model


def bake(model: nn.Module, *, fold_bn: bool = True) -> fx.GraphModule:
    """A plain, traced copy of ``model`` (eval mode) with masks applied and BN folded."""
    model = copy.deepcopy(model).eval()
    refresh_global_masks(model)
    model = _replace_subnets(model)
    for module in model.modules():
        if isinstance(module, SubnetMixin):
            raise BakeError("a subnet layer could not be replaced")
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # torch.fx raises many types for untraceable code
        raise BakeError(f"cannot trace {type(model).__name__} with torch.fx ({err.__class__.__name__}): ONNX export "
                        f"needs a model without data-dependent control flow") from None
    if fold_bn:
        fold_batchnorm(gm)
    return gm


# --------------------------------------------------------------------------- dead units


@dataclass
class _Chain:
    producer: nn.Module  # Conv2d / Linear
    consumer: nn.Module  # Conv2d / Linear reading only the producer's output
    ops: list  # the channel-wise ops in between (modules or functions), in order
    flatten: bool  # a flatten between a conv producer and a linear consumer


def _channelwise(gm: fx.GraphModule, node: fx.Node):
    """The node's channel-wise op (module or function), or None."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return module if isinstance(module, _CHANNELWISE_MODULES) else None
    if node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS:
        return node.target
    return None


def _is_flatten(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1
    return node.op == "call_function" and node.target is torch.flatten and node.args[1:] == (1,) and not node.kwargs


def _chains(gm: fx.GraphModule) -> list[_Chain]:
    """Producer -> (channel-wise ops, at most one flatten) -> consumer paths with no branching."""
    chains = []
    for node in gm.graph.nodes:
        producer = single_user_module(gm, node, WEIGHTED)
        if producer is None:
            continue
        ops, flatten, current = [], False, next(iter(node.users))
        while True:
            op = _channelwise(gm, current)
            if op is not None and len(current.users) == 1:
                ops.append(op)
            elif _is_flatten(gm, current) and len(current.users) == 1 and not flatten:
                flatten = True
            else:
                break
            current = next(iter(current.users))
        consumer = gm.get_submodule(current.target) if current.op == "call_module" else None
        if not isinstance(consumer, WEIGHTED) or getattr(consumer, "groups", 1) != 1:
            continue
        if flatten != (isinstance(producer, nn.Conv2d) and isinstance(consumer, nn.Linear)):
            continue
        chains.append(_Chain(producer, consumer, ops, flatten))
    return chains


def _constant_after(ops: list, value: torch.Tensor) -> torch.Tensor:
    """What the channel-wise ops make of a channel that is the constant ``value`` (per channel)."""
    for op in ops:
        if op in _CHANNELWISE_FUNCTIONS or isinstance(op, nn.ReLU):
            value = torch.clamp_min(value, 0.0)
        # max/avg pooling, dropout (eval) and identity keep a constant channel as it is
    return value


def _prune_chain(chain: _Chain) -> int:
    """Remove the producer's dead output units (and the consumer's matching inputs); how many.

    Dead: no outgoing weight (the consumer never reads it), or no incoming weight, so that the
    unit outputs its bias, a constant: removable when the ops make it 0, or when the consumer is
    a Linear that takes the constant's contribution into its bias (a conv's zero padding would
    not see a constant, so there it stays).
    """
    p, c = chain.producer, chain.consumer
    units, outputs = p.weight.shape[0], c.weight.shape[0]
    per_unit = c.weight.shape[1] // units  # consumer inputs per producer unit (H*W after a flatten)
    if per_unit * units != c.weight.shape[1]:
        return 0
    consumer_in = c.weight.detach().reshape(outputs, units, per_unit, -1)  # [out, units, per_unit, kh*kw or 1]
    outgoing_zero = consumer_in.eq(0).all(3).all(2).all(0)
    incoming_zero = p.weight.detach().reshape(units, -1).eq(0).all(1)
    constant = _constant_after(chain.ops, p.bias.detach() if p.bias is not None else torch.zeros(units))
    dead = outgoing_zero | (incoming_zero & (constant.eq(0) | isinstance(c, nn.Linear)))
    if not bool(dead.any()) or bool(dead.all()):
        return 0
    keep, moved = ~dead, dead & ~outgoing_zero & constant.ne(0)  # moved: constants that reach a Linear
    with torch.no_grad():
        if bool(moved.any()):
            contribution = (consumer_in[:, moved, :, 0] * constant[moved][None, :, None]).sum((1, 2))
            c.bias = nn.Parameter((c.bias.detach() if c.bias is not None else torch.zeros(outputs)) + contribution)
        p.weight = nn.Parameter(p.weight.detach()[keep].clone())
        if p.bias is not None:
            p.bias = nn.Parameter(p.bias.detach()[keep].clone())
        c.weight = nn.Parameter(consumer_in[:, keep].reshape(outputs, -1, *c.weight.shape[2:]).clone())
    _resize(p, c, int(keep.sum()), per_unit)
    return int(dead.sum())


def _resize(p: nn.Module, c: nn.Module, units: int, per_unit: int) -> None:
    if isinstance(p, nn.Conv2d):
        p.out_channels = units
    else:
        p.out_features = units
    if isinstance(c, nn.Conv2d):
        c.in_channels = units
    else:
        c.in_features = units * per_unit


def prune_dead_units(gm: fx.GraphModule) -> int:
    """Remove dead units along every producer -> consumer chain until none is left; the count."""
    removed = 0
    while True:
        step = sum(_prune_chain(chain) for chain in _chains(gm))
        if not step:
            break
        removed += step
    gm.recompile()
    return removed


# --------------------------------------------------------------------------- counting


def count(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Parameters, nonzero weights and FLOPs (2 per multiply-add) of one forward of one input."""
    flops = 0

    def hook(module, inputs, output):
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            flops += 2 * output.numel() * module.weight[0].numel()
        elif isinstance(module, nn.Linear):
            flops += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, WEIGHTED)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    weights = [m.weight for m in model.modules() if isinstance(m, WEIGHTED)]
    return {"params": sum(p.numel() for p in model.parameters()),
            "nonzero_weights": int(sum(int(w.count_nonzero()) for w in weights)), "flops": flops}


__all__ = ["BakeError", "bake", "count", "prune_dead_units"]
