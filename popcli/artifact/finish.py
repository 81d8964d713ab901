"""What ``popcli.load`` hands back: the rebuilt model made ready for inference or for search.

``finish_load(model, art, mode, fold_bn)`` takes the model ``rebuild.load`` rebuilt (subnet layers
frozen to the stored masks, stored tensors filled) and, for ``mode="infer"``, bakes every subnet
layer into a plain frozen Conv2d/Linear holding ``w * mask`` (``nn.bake_subnets``: the same logits
bit for bit) and, with ``fold_bn``, folds each batch norm that follows a conv/linear into it
(``nn.fold`` on the torch.fx trace: what the baked model and the ONNX export do;
logits then agree to float32 rounding, ~1e-6, not bit for bit; a model torch.fx cannot trace
keeps its batch norms). For ``mode="search"`` it gives each subnet layer trainable scores whose
top-k is exactly its stored mask (drawn from the seed's "scores" stream of that layer).
``mode="packed"`` is the infer model with its +-c layers replaced by ``nn.packed`` layers (keep and
sign bits; refused for float inits). Nothing here reads files.
"""

from __future__ import annotations

import torch.nn as nn

from .. import rng
from ..models import masked_layers
from ..nn import bake_subnets
from ..errors import ArtifactError
from ..nn.fold import fold_traced
from ..nn.packed import pack_model
from . import preprocess
from .container import Artifact


def finish_load(model: nn.Module, art: Artifact, mode: str, fold_bn: bool = True) -> nn.Module:
    """``model`` (rebuilt from ``art``, an ``artifact.Artifact``) as ``mode`` wants it; see the module
    docstring. Either way it carries ``popcli_data_config`` (``preprocess``: mean, std, input shape,
    classes) and ``popcli_description`` (so that ``popcli.save(model, path)`` can write it again)."""
    model = _finish(model, art, mode, fold_bn)
    model.popcli_data_config = preprocess.from_artifact(art)
    info = {**art.data_info, **{k: model.popcli_data_config[k] for k in ("mean", "std", "class_names", "dataset")}}
    model.popcli_description = {"recipe": art.recipe, "data_info": info}
    return model


def _finish(model: nn.Module, art: Artifact, mode: str, fold_bn: bool) -> nn.Module:
    if mode == "search":
        for name, layer in masked_layers(model):
            if layer.rule is None:  # a method rule's layer (biprop, signed supermask) keeps its fixed mask
                layer.reset_scores_to_mask(layer.fixed_mask, rng.torch_generator(art.recipe.seed, "scores", name))
        return model
    model = bake_subnets(model.eval())
    if fold_bn:
        model = fold_traced(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if mode == "packed":
        check_packable(art)
        model, _ = pack_model(model)
    return model


PACKABLE_INITS = ("signed_constant", "scaled_signed_constant")


def packable(art: Artifact) -> bool:
    """Whether every kept weight of a masked row is +-one value: a signed-constant init, or biprop
    (+-alpha whatever the init); never a dense (trained) model."""
    init, method = art.recipe.model.init, art.recipe.search.method
    return method not in ("dense", "subspace") and (method == "biprop" or init in PACKABLE_INITS)


def check_packable(art: Artifact) -> None:
    """mode='packed' needs +-c weights (``packable``)."""
    init, method = art.recipe.model.init, art.recipe.search.method
    if not packable(art):
        raise ArtifactError(f"mode='packed' runs signed-constant weights from their bits; {art.path} holds float "
                            f"weights (init {init}, method {method}): load it with the default mode='infer'")
