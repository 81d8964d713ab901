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

from . import policy, preprocess, rng
from .bake import fold_batchnorm
from .errors import ArtifactError
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
    """``model`` (rebuilt from ``art``, an ``artifact.Artifact``) as ``mode`` wants it; see the module
    docstring. Either way it carries ``popcli_data_config`` (``preprocess``: mean, std, input shape,
    classes) and ``popcli_description`` (so that ``popcli.save(model, path)`` can write it again)."""
    model = _finish(model, art, mode, fold_bn)
    model.popcli_data_config = preprocess.from_artifact(art)
    info = {**art.data_info, **{k: model.popcli_data_config[k] for k in ("mean", "std", "class_names", "dataset")}}
    model.popcli_description = {"recipe": art.recipe, "data_info": info}
    return model


def _finish(model: nn.Module, art, mode: str, fold_bn: bool) -> nn.Module:
    if mode == "search":
        for name, layer in masked_layers(model):
            if layer.rule is None:  # a method rule's layer (biprop, signed supermask) keeps its fixed mask
                layer.reset_scores_to_mask(layer.fixed_mask, rng.torch_generator(art.recipe.seed, "scores", name))
        return model
    model = bake_subnets(model.eval())
    if fold_bn:
        model = _fold(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def frozen_records(model: nn.Module, recipe) -> list[dict]:
    """[{name, shape, sha256}] of the model's frozen parameters (``policy``: regenerated, not stored)."""
    tensors = dict(model.named_parameters())
    return [{"name": name, "shape": list(tensors[name].shape), "sha256": rng.weight_sha256(tensors[name])}
            for name in policy.frozen_names(model, recipe.model.biases, recipe.model.params)]


def fill_frozen(model: nn.Module, art) -> list[str]:
    """Regenerate the frozen parameters of a rebuilt model from the seed, each checked against the
    file's ``frozen`` metadata (optional: absent means none); their names."""
    recorded = {r.get("name"): r for r in _frozen_metadata(art)}
    biases, params = art.recipe.model.biases, art.recipe.model.params
    names = policy.frozen_names(model, biases, params)
    if sorted(names) != sorted(recorded):
        raise ArtifactError(f"{art.path}: the file's frozen parameters differ from the model's ({len(recorded)} vs "
                            f"{len(names)}); was it written by another version of the architecture?")
    if names:
        policy.init_params(model, art.recipe.seed, biases, params, only_frozen=True)
    tensors = dict(model.named_parameters())
    for name in names:
        if rng.weight_sha256(tensors[name]) != recorded[name].get("sha256"):
            raise ArtifactError(f"{art.path}: frozen parameter {name!r} regenerated from the seed does not match the "
                                f"stored checksum (corrupt artifact, or another generator)")
    return names


def _frozen_metadata(art) -> list[dict]:
    import json

    try:
        value = json.loads(art.metadata.get("frozen", "[]"))
    except json.JSONDecodeError:
        raise ArtifactError(f"{art.path}: metadata 'frozen' is not valid JSON (corrupt artifact)") from None
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise ArtifactError(f"{art.path}: metadata 'frozen' is malformed (corrupt artifact)")
    return value
