"""Batch norm folded into the conv/linear before it, on a torch.fx graph: what ``popcli.load``
(``mode="infer"``), the baked deployment model and the ONNX export all compute.

``fold_batchnorm(gm)`` rewrites a traced model in place: every eval-mode BatchNorm1d/2d whose
only input is a Conv2d/Linear used by nothing else (groups 1) is folded into that layer's weight
and bias, computed in float64 and rounded once to float32. ``fold_traced(model)`` traces a model
first and returns it unchanged when there is nothing to fold or torch.fx cannot trace it (the
unfolded model is still correct). Logits then agree with the unfolded model to float32 rounding
(~1e-6), not bit for bit. Nothing here reads files or draws random numbers.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

WEIGHTED = (nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _fold(conv: nn.Module, norm: nn.Module) -> None:
    """conv := norm(conv(x)) for eval-mode statistics, in float64; conv gains a bias."""
    w = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    scale = 1.0 / torch.sqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.affine:
        scale, shift = scale * norm.weight.double(), shift * norm.weight.double() + norm.bias.double()
    shape = (-1,) + (1,) * (w.dim() - 1)
    with torch.no_grad():
        conv.weight.copy_((w * scale.view(shape)).float())
        conv.bias = nn.Parameter((bias * scale + shift).float())


def single_user_module(gm: fx.GraphModule, node: fx.Node, kinds) -> nn.Module | None:
    """The module ``node`` calls when it is one of ``kinds`` and its output has exactly one user."""
    if node.op == "call_module" and len(node.users) == 1:
        module = gm.get_submodule(node.target)
        if isinstance(module, kinds):
            return module
    return None


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Fold each eval-mode BN fed only by a conv/linear into it; returns how many were folded."""
    folded = 0
    for node in list(gm.graph.nodes):
        norm = gm.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(norm, NORMS) or not norm.track_running_stats or norm.running_mean is None:
            continue
        source = node.args[0]
        conv = single_user_module(gm, source, WEIGHTED) if isinstance(source, fx.Node) else None
        if conv is None or getattr(conv, "groups", 1) != 1:
            continue
        _fold(conv, norm)
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


def fold_traced(model: nn.Module) -> nn.Module:
    """The model with batch norms folded into the layers before them, when torch.fx can trace it."""
    if not any(isinstance(m, NORMS) for m in model.modules()):
        return model  # nothing to fold: keep the model's own class (exact bits)
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # torch.fx raises many types for untraceable code; unfolded is still correct
        return model
    fold_batchnorm(gm)
    return gm
