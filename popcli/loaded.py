"""What ``popcli.load`` hands back: the rebuilt model made ready for inference or for search.

``finish_load(model, art, mode, fold_bn)`` takes the model ``artifact.load`` rebuilt (subnet layers
frozen to the stored masks, stored tensors filled) and, for ``mode="infer"``, bakes every subnet
layer into a plain frozen Conv2d/Linear holding ``w * mask`` (``nn.bake_subnets``: the same logits
bit for bit) and, with ``fold_bn``, folds each batch norm that follows a conv/linear into it
(``bake.fold_batchnorm`` on the torch.fx trace: what ``popcli.bake`` and the ONNX export do;
logits then agree to float32 rounding, ~1e-6, not bit for bit; a model torch.fx cannot trace
keeps its batch norms). For ``mode="search"`` it gives each subnet layer trainable scores whose
top-k is exactly its stored mask (drawn from the seed's "scores" stream of that layer). Nothing
here reads files.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

from . import rng
from .bake import fold_batchnorm
from .models import masked_layers
from .nn import bake_subnets

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _fold(model: nn.Module) -> nn.Module:
    """The model with batch norms folded into the layers before them, when torch.fx can trace it."""
    if not any(isinstance(m, _NORMS) for m in model.modules()):
        return model  # nothing to fold: keep the model's own class (exact bits)
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # torch.fx raises many types for untraceable code; unfolded is still correct
        return model
    fold_batchnorm(gm)
    return gm


def finish_load(model: nn.Module, art, mode: str, fold_bn: bool = True) -> nn.Module:
    """``model`` (rebuilt from ``art``, an ``artifact.Artifact``) as ``mode`` wants it; see the module docstring."""
    if mode == "search":
        for name, layer in masked_layers(model):
            layer.reset_scores_to_mask(layer.fixed_mask, rng.torch_generator(art.recipe.seed, "scores", name))
        return model
    model = bake_subnets(model.eval())
    if fold_bn:
        model = _fold(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
