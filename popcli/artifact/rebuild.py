"""``popcli.load``: an artifact rebuilt into the exact subnetwork, every checksum verified.

The second half of the read pipeline: ``reader.read`` (every entry parsed and checked) -> the
model to fill: the recipe's architecture on the meta device (``structure.skeleton``, once the
trust rule allows its builder) or the caller's own module (``model=``, ``structure.own_model``)
-> ``verification.verify`` (the verification ``popcli inspect`` runs too, for every mask: tensors,
masks, weights, method state, the structure) -> fill the chosen mask's subnet layers (seed
weights, file masks, signs) and stored tensors -> ``finish.finish_load`` (``mode="infer"``:
plain layers, batch norm folded; ``mode="search"``: subnet layers with scores). ``mask="auto"``
first infers which mask the given images need (``tasks``: every mask's model, filled from the
same verification). Every problem is an ``ArtifactError`` naming the file
(``UntrustedCodeError`` for a builder not trusted).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ArtifactError
from ..methods import store as method_store
from ..models import masked_layers
from ..models.trust import NO_BUILDER
from .container import Artifact
from .finish import finish_load
from .multimask import select
from .reader import read
from .structure import builder, check_trust, own_model, skeleton
from .tasks import AUTO, TaskGuess, TaskMixture
from .verification import Checked, Verification, verify

MODES = ("infer", "search", "packed")


def _fill(checked: Checked) -> nn.Module:
    """The checked model with the mask's weights (seed), masks (file), signs and stored tensors."""
    model, view = checked.model, checked.view
    for (_, layer), record, mask, weight in zip(masked_layers(model), view.layers, checked.masks, checked.weights):
        layer.weight = nn.Parameter(weight, requires_grad=False)
        layer.fix_mask(torch.from_numpy(mask).view(record.shape), record.kept)  # the file stores no scores
    method_store.apply(model, checked.flips)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in checked.stored.items()}, strict=False, assign=True)
    left = [key for key, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise ArtifactError(f"{view.path}: nothing in the file fills {left[0]!r} (corrupt artifact)")
    return model


def _infer_task(art: Artifact, result: Verification, inputs) -> TaskGuess:
    """The mask of ``art`` whose task the images ``inputs`` [B, C, H, W] belong to (``tasks``:
    SupSup's one-shot entropy gradient over every mask's model, baked without folding)."""
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        raise ArtifactError("mask='auto' infers the task from images: pass inputs=a float tensor [B, C, H, W] of "
                            "preprocessed images" + ("" if inputs is None else f" (got {type(inputs).__name__})"))
    shape = [int(d) for d in art.data_info["shape"]]
    if list(inputs.shape[1:]) != shape:
        raise ArtifactError(f"{art.path}: inputs are {list(inputs.shape[1:])} images, the model takes {shape}")
    models = {name: finish_load(_fill(copy.deepcopy(result.checked[name])), result.checked[name].view, "infer",
                                fold_bn=False) for name in art.header.mask_names}
    return TaskMixture(models).infer(inputs)


def mask_models(art: Artifact, *, mode: str = "infer", fold_bn: bool = False,
                trust_code: bool = False) -> dict[str, nn.Module]:
    """{mask name: its model} of a read artifact, every mask verified (the trust rule applies):
    what ``popcli eval --mask auto`` mixes and classifies with."""
    check_trust(art, trust_code)
    result = verify(art, skeleton)
    result.raise_first()
    return {name: finish_load(_fill(result.checked[name]), result.checked[name].view, mode, fold_bn).eval()
            for name in art.header.mask_names}


def _check_options(mode: str, mask: str | None, inputs, model: nn.Module | None) -> None:
    if mode not in MODES:
        raise ArtifactError(f"mode {mode!r}: use mode='infer' (plain layers, deployment), mode='search' (subnet "
                            f"layers with scores) or mode='packed' (signed-constant layers run from their bits)")
    if inputs is not None and mask != AUTO:
        raise ArtifactError("inputs= is for mask='auto' (task inference); drop it, or pass mask='auto'")
    if mask == AUTO and model is not None:
        raise ArtifactError("mask='auto' builds one model per mask; it does not fill model=: load the inferred mask "
                            "by name into your module")


def load(path: str | Path, device: str | torch.device = "cpu", mask: str | None = None, *, mode: str = "infer",
         fold_bn: bool = True, inputs=None, model: nn.Module | None = None, trust_code: bool = False) -> nn.Module:
    """The subnetwork of an artifact as an eval-mode model on ``device``, every checksum verified;
    ``mask``: which named mask of a multi-mask file (None: its first, ``multimask``), or ``"auto"``:
    the mask whose task the images ``inputs`` [B, C, H, W] belong to (SupSup's one-shot task
    inference, ``tasks``; the guess is ``model.popcli_task``).

    ``mode="infer"`` (the default, for deployment): masked layers become plain frozen
    Conv2d/Linear holding ``w * mask`` and, with ``fold_bn``, batch norms are folded into them
    (``nn.fold``), so a forward costs what the baked dense model's does; logits equal the
    searched model's bit for bit with ``fold_bn=False`` (or no batch norm), to float32 rounding
    otherwise. ``mode="packed"``: the infer model with its signed-constant layers run from keep
    and sign bits (``nn.packed``; float inits are refused). ``mode="search"``: subnet layers whose trainable scores select exactly the stored
    mask (``layer.mask()``; see ``finish``), to continue a search or inspect masks; logits bit
    for bit. (Bit for bit: on the same device and torch version.)

    ``model``: load into this module instead of building one (as ``load_state_dict`` does): the
    architecture the file was saved from, plain or subnetified, checked layer for layer and
    tensor for tensor against the file, converted in place (its ``popcli_description`` names no
    builder unless the file's is trusted here, so saving it never names code nobody trusted).
    ``trust_code``: build a model whose builder the file names even when it is not popcli's own
    or an installed entry point (it imports that code; docs/BRING_YOUR_OWN.md).
    """
    _check_options(mode, mask, inputs, model)
    art = read(path)
    if mask != AUTO:
        select(art, mask)  # an unknown mask name: the error listing the masks there are
    if model is None:
        check_trust(art, trust_code)
        result = verify(art, skeleton)
    else:
        own = own_model(art, model)
        result = verify(art, lambda view: own, own=True)
    result.raise_first()  # a problem in any mask refuses the file
    guess = _infer_task(art, result, inputs) if mask == AUTO else None
    name = guess.mask if guess is not None else mask or art.header.mask_names[0]
    finished = finish_load(_fill(result.checked[name]), result.checked[name].view, mode, fold_bn).to(device).eval()
    if model is not None and not builder(art).trusted:  # saved again, it must not name code nobody trusted
        recipe = finished.popcli_description["recipe"]
        finished.popcli_description["recipe"] = replace(recipe, model=replace(recipe.model, arch=NO_BUILDER))
    if guess is not None:
        finished.popcli_task = guess.to_dict()
    return finished
