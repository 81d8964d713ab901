"""``popcli.load``: an artifact rebuilt into the exact subnetwork, every checksum verified.

The second half of the read pipeline: ``reader.read`` (header parsed and checked, structure
checked on the meta device) -> ``multimask.select`` (one mask's view) -> ``masks.start``
(decode masks and regenerate weights in two threads while this one builds the structure) ->
fill the subnet layers (seed weights, file masks, method state) and the stored tensors ->
``finish.finish_load`` (``mode="infer"``: plain layers, batch norm folded; ``mode="search"``:
subnet layers with scores). ``mask="auto"`` first infers which mask the given images need
(``tasks``). Every problem is an ``ArtifactError`` naming the file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ArtifactError
from ..methods import store as method_store
from . import masks
from .container import Artifact
from .finish import finish_load
from .multimask import select
from .reader import check_state, check_structure, read, skeleton
from .tasks import AUTO, TaskGuess, TaskMixture

MODES = ("infer", "search")


def _build_and_fill(art: Artifact, pool: ThreadPoolExecutor) -> nn.Module:
    """The meta-built model with weights (seed) and masks (file) in its subnet layers; the
    workers decode and regenerate while this thread builds the structure."""
    model = skeleton(art)
    layers = check_structure(model, art)
    decoded, weights = masks.start(art, pool)
    for layer, record, mask, weight in zip(layers, art.layers, decoded.result(), weights):
        layer.weight = nn.Parameter(weight.result(), requires_grad=False)
        layer.fix_mask(torch.from_numpy(mask).view(record.shape), record.kept)  # the file stores no scores
    method_store.restore(art.path, model, art.recipe.search.method, art.tensors, art.header.method_state)
    return model


def _fill_state(model: nn.Module, art: Artifact) -> None:
    """Batch-norm statistics and trained dense weights from the file; keys must match exactly."""
    stored = check_state(model, art)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in stored.items()}, strict=False, assign=True)


def build(art: Artifact, mode: str = "infer", fold_bn: bool = True) -> nn.Module:
    """The model of one mask's view ``art`` (``multimask.select``), as ``load`` returns it (CPU)."""
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        model = _build_and_fill(art, pool)
    finally:
        pool.shutdown(cancel_futures=True)
    _fill_state(model, art)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise ArtifactError(f"{art.path}: nothing in the file fills {left[0]!r} (corrupt artifact)")
    return finish_load(model, art, mode, fold_bn)


def infer_task(art: Artifact, inputs) -> TaskGuess:
    """The mask of ``art`` whose task the images ``inputs`` [B, C, H, W] belong to (``tasks``:
    SupSup's one-shot entropy gradient over all masks)."""
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        raise ArtifactError("mask='auto' infers the task from images: pass inputs=a float tensor [B, C, H, W] of "
                            "preprocessed images" + ("" if inputs is None else f" (got {type(inputs).__name__})"))
    shape = [int(d) for d in art.data_info["shape"]]
    if list(inputs.shape[1:]) != shape:
        raise ArtifactError(f"{art.path}: inputs are {list(inputs.shape[1:])} images, the model takes {shape}")
    models = {name: build(select(art, name), "infer", fold_bn=False) for name in art.header.mask_names}
    return TaskMixture(models).infer(inputs)


def load(path: str | Path, device: str | torch.device = "cpu", mask: str | None = None, *, mode: str = "infer",
         fold_bn: bool = True, inputs=None) -> nn.Module:
    """The subnetwork of an artifact as an eval-mode model on ``device``, every checksum verified;
    ``mask``: which named mask of a multi-mask file (None: its first, ``multimask``), or ``"auto"``:
    the mask whose task the images ``inputs`` [B, C, H, W] belong to (SupSup's one-shot task
    inference, ``tasks``; the guess is ``model.popcli_task``).

    ``mode="infer"`` (the default, for deployment): masked layers become plain frozen
    Conv2d/Linear holding ``w * mask`` and, with ``fold_bn``, batch norms are folded into them
    (``nn.fold``), so a forward costs what the baked dense model's does; logits equal the
    searched model's bit for bit with ``fold_bn=False`` (or no batch norm), to float32 rounding
    otherwise. ``mode="search"``: subnet layers whose trainable scores select exactly the stored
    mask (``layer.mask()``; see ``finish``), to continue a search or inspect masks; logits bit
    for bit. (Bit for bit: on the same device and torch version.)
    """
    if mode not in MODES:
        raise ArtifactError(f"mode {mode!r}: use mode='infer' (plain layers, deployment) or mode='search' (subnet "
                            f"layers with scores)")
    art = read(path)
    guess = None
    if mask == AUTO:
        guess = infer_task(art, inputs)
        mask = guess.mask
    elif inputs is not None:
        raise ArtifactError("inputs= is for mask='auto' (task inference); drop it, or pass mask='auto'")
    model = build(select(art, mask), mode, fold_bn).to(device).eval()
    if guess is not None:
        model.popcli_task = guess.to_dict()
    return model
