"""``popcli.load``: an artifact rebuilt into the exact subnetwork, every checksum verified.

The second half of the read pipeline: ``reader.read`` (every entry parsed and checked) -> the
model to fill: the recipe's architecture on the meta device (``structure.skeleton``, once the
trust rule allows its builder) or the caller's own module (``model=``, ``structure.own_model``)
-> ``verification.verify`` (the verification ``popcli inspect`` runs too, for every mask: tensors,
masks, weights, method state, the structure) -> fill the chosen mask's subnet layers (seed
weights, file masks, signs) and stored tensors -> ``finish.finish_load`` (``mode="infer"``:
plain layers, batch norm folded; ``mode="search"``: subnet layers with scores). Every problem is
an ``ArtifactError`` naming the file (``UntrustedCodeError`` for a builder not trusted).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ArtifactError
from ..methods import store as method_store
from ..models import masked_layers
from ..models.trust import NO_BUILDER
from .finish import finish_load
from .multimask import select
from .reader import read
from .structure import builder, check_trust, own_model, skeleton
from .verification import Checked, verify

MODES = ("infer", "search")


def _fill(checked: Checked) -> nn.Module:
    """The checked model with the mask's weights (seed), masks (file), signs and stored tensors."""
    model, view = checked.model, checked.view
    for (_, layer), record, mask, weight in zip(masked_layers(model), view.layers, checked.masks, checked.weights):
        layer.weight = nn.Parameter(weight, requires_grad=False)
        layer.fix_mask(torch.from_numpy(mask).view(record.shape), record.kept)  # the file stores no scores
    method_store.apply(model, checked.flips)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in checked.stored.items()}, strict=False, assign=True)
    return model


def load(path: str | Path, device: str | torch.device = "cpu", mask: str | None = None, *, mode: str = "infer",
         fold_bn: bool = True, model: nn.Module | None = None, trust_code: bool = False) -> nn.Module:
    """The subnetwork of an artifact as an eval-mode model on ``device``, every checksum verified;
    ``mask``: which named mask of a multi-mask file (None: its first, ``multimask``).

    ``mode="infer"`` (the default, for deployment): masked layers become plain frozen
    Conv2d/Linear holding ``w * mask`` and, with ``fold_bn``, batch norms are folded into them
    (``nn.fold``), so a forward costs what the baked dense model's does; logits equal the
    searched model's bit for bit with ``fold_bn=False`` (or no batch norm), to float32 rounding
    otherwise. ``mode="search"``: subnet layers whose trainable scores select exactly the stored
    mask (``layer.mask()``; see ``finish``), to continue a search or inspect masks; logits bit
    for bit. (Bit for bit: on the same device and torch version.)

    ``model``: load into this module instead of building one (as ``load_state_dict`` does): the
    architecture the file was saved from, plain or subnetified, checked layer for layer and
    tensor for tensor against the file, converted in place (its ``popcli_description`` names no
    builder unless the file's is trusted here, so saving it never names code nobody trusted).
    ``trust_code``: build a model whose builder the file names even when it is not popcli's own
    or an installed entry point (it imports that code; docs/BRING_YOUR_OWN.md).
    """
    if mode not in MODES:
        raise ArtifactError(f"mode {mode!r}: use mode='infer' (plain layers, deployment) or mode='search' (subnet "
                            f"layers with scores)")
    art = read(path)
    select(art, mask)  # an unknown mask name: the error listing the masks there are
    name = mask or art.header.mask_names[0]
    if model is None:
        check_trust(art, trust_code)
        result = verify(art, skeleton)
    else:
        own = own_model(art, model)
        result = verify(art, lambda view: own, own=True)
    result.raise_first()  # a problem in any mask refuses the file
    loaded = _fill(result.checked[name])
    left = [key for key, t in [*loaded.named_parameters(), *loaded.named_buffers()] if t.device.type == "meta"]
    if left:
        raise ArtifactError(f"{art.path}: nothing in the file fills {left[0]!r} (corrupt artifact)")
    finished = finish_load(loaded, result.checked[name].view, mode, fold_bn).to(device).eval()
    if model is not None and not builder(art).trusted:  # saved again, it must not name code nobody trusted
        recipe = finished.popcli_description["recipe"]
        finished.popcli_description["recipe"] = replace(recipe, model=replace(recipe.model, arch=NO_BUILDER))
    return finished

