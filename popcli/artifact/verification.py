"""The one verification of an artifact, for every mask it holds: what ``popcli inspect`` reports
and what ``popcli.load`` requires before it fills a model (docs/FORMAT.md, "Reading").

``verify(art, model_for)`` checks each mask (the default and every ``mask.NAME``) the same way,
after ``reader.read`` parsed every entry:

1. its view (``multimask.select``: its recipe shares the file's seed, model, method, dense
   layers and input);
2. when ``model_for(view)`` gives a model (the recipe's architecture on the meta device, or the
   caller's module; None where inspect does not import the model's code): its masked layers
   (names, shapes, order) and every other tensor (``state.*``, frozen parameters) against the
   file (``structure``);
3. its tensors, without a model: ``masks`` (when it has masked layers), ``state.*`` of the same
   keys, dtypes and shapes as the default mask's, the method's own (``method.signs`` for signed
   supermask, ``subspace.z`` for subspace, nothing for the others) and nothing else; file-wide, no ``mask.X.`` tensor of a
   name ``mask_names`` does not list;
4. its masks decoded (kept counts, padding bits) and its weights regenerated and checked against
   ``layers`` (one regeneration per distinct draw, shared by the masks); with IteRand, its
   ``iterand.draws`` decoded and each kept weight re-drawn, checked against ``iterand``'s
   checksums (``redraws``);
5. its method state against those weights and masks (``methods.store.check``).

Decoding and regeneration run in two worker threads while this one builds the structure. The
``Verification`` keeps what ``load`` fills a model with (masks, weights, signs, the model); its
``problems`` hold the first problem of each mask that fails. Nothing here prints.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..errors import ArtifactError
from ..methods import store as method_store
from ..models import init_density
from . import masks as mask_codec, redraws
from .container import MASKS, MULTI_MASK_VERSION, STATE, Artifact
from .multimask import select
from .structure import check_state, check_structure

ModelFor = Callable[[Artifact], "nn.Module | None"]


@dataclass
class Checked:
    """One mask, verified: its single-mask view and what a model is filled with."""

    view: Artifact
    masks: list[np.ndarray]  # bool [numel] per masked layer
    weights: list[torch.Tensor]  # the regenerated, checksum-verified weights per masked layer
    flips: object  # the method's checked state: signed supermask bool [kept] per layer (1: sign inverted),
    # subspace its z (methods.store.Coordinates), else None
    model: nn.Module | None = None  # the model its structure was checked against
    stored: dict[str, np.ndarray] = field(default_factory=dict)  # its state tensors {model key: array}


@dataclass
class Verification:
    checked: dict[str, Checked]  # the masks that verified, by name
    problems: list[str]  # one line per mask that did not
    structure: bool  # whether step 2 (the structure against a model) ran for every mask

    def raise_first(self) -> None:
        if self.problems:
            raise ArtifactError(self.problems[0])


def _orphans(art: Artifact) -> None:
    """Every ``mask.`` tensor belongs to a mask that ``mask_names`` lists (none in versions 1 and 2)."""
    prefixes = tuple(f"mask.{name}." for name in art.header.mask_names[1:])
    for key in sorted(art.tensors):
        if key.startswith("mask.") and not (art.header.format_version >= MULTI_MASK_VERSION and key.startswith(prefixes)):
            raise ArtifactError(f"{art.path}: tensor {key!r} belongs to no mask of 'mask_names' (corrupt artifact)")


def _state_facts(view: Artifact) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: (v.dtype.str, tuple(v.shape)) for k, v in view.tensors.items() if k.startswith(STATE)}


def _check_tensors(view: Artifact, default: Artifact) -> None:
    """A mask's tensors without a model: exactly its masks, its method's, and the default's state keys."""
    method = view.recipe.search.method
    allowed = {MASKS, *method_store.method_tensors(method)} if view.layers else set(method_store.method_tensors(method))
    if redraws.enabled(view.recipe) and view.layers:
        allowed.add(redraws.DRAWS)
    extra = sorted(k for k in view.tensors if k not in allowed and not k.startswith(STATE))
    if extra:
        raise ArtifactError(f"unexpected tensor {extra[0]!r} for method {method!r} (corrupt artifact)")
    mine, theirs = _state_facts(view), _state_facts(default)
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            problem = "is missing" if key not in mine else "is unexpected" if key not in theirs else \
                f"is {mine[key][0]} {list(mine[key][1])}, the first mask's {theirs[key][0]} {list(theirs[key][1])}"
            raise ArtifactError(f"tensor {key!r} {problem} (every mask holds the same state tensors; corrupt artifact)")


def _line(art: Artifact, name: str, err: Exception) -> str:
    """One problem line: the file, the mask (unless it is the default), what is wrong."""
    prefix, text = f"{art.path}: ", str(err)
    body = text[len(prefix):] if text.startswith(prefix) else text
    if name == art.header.mask_names[0] or body.startswith(f"mask {name!r}"):
        return prefix + body
    return f"{prefix}mask {name!r}: {body}"


def _draw_key(view: Artifact, i: int) -> tuple:
    record, r = view.layers[i], view.recipe
    return r.seed, record.name, record.shape, record.sha256, r.model.init, init_density(r.search)


def _submit(views: dict[str, Artifact], pool: ThreadPoolExecutor) -> tuple[dict[str, Future], dict[tuple, Future]]:
    """Decoding per mask and regeneration per distinct draw (largest layers first), in the pool."""
    decoded = {name: pool.submit(mask_codec.decode, view) for name, view in views.items()}
    draws: dict[tuple, Future] = {}
    for view in views.values():
        for i in sorted(range(len(view.layers)), key=lambda i: -view.layers[i].numel):
            key = _draw_key(view, i)
            if key not in draws:
                draws[key] = pool.submit(mask_codec.regenerate, view, view.layers[i], 1)
    return decoded, draws


def _structure(view: Artifact, model_for: ModelFor, own: bool) -> tuple[nn.Module | None, dict]:
    model = model_for(view)
    if model is None:
        return None, {}
    check_structure(model, view, own)
    return model, check_state(model, view, own)


def verify(art: Artifact, model_for: ModelFor | None = None, *, own: bool = False) -> Verification:
    """Verify every mask of ``art`` (see the module docstring); ``model_for(view)`` is the model to
    check a mask's structure against (None, or returning None: not checked); ``own``: it is the
    caller's module (messages say so)."""
    problems: list[str] = []
    try:
        _orphans(art)
    except ArtifactError as err:
        return Verification({}, [str(err)], False)
    views: dict[str, Artifact] = {}
    for name in art.header.mask_names:
        try:
            views[name] = select(art, name)
        except ArtifactError as err:
            problems.append(_line(art, name, err))
    checked, structure, default = {}, model_for is not None, select(art, None)
    with ThreadPoolExecutor(max_workers=2) as pool:
        decoded, draws = _submit(views, pool)
        try:
            for name, view in views.items():
                try:
                    model, stored = _structure(view, model_for, own) if model_for else (None, {})
                    structure = structure and model is not None
                    _check_tensors(view, default)
                    layer_masks = decoded[name].result()
                    weights = [draws[_draw_key(view, i)].result() for i in range(len(view.layers))]
                    weights = redraws.apply(view, layer_masks, weights, init_density(view.recipe.search))  # IteRand
                    flips = method_store.check(view.path, view.recipe.search.method, view.tensors,
                                               view.header.method_state, weights, layer_masks, view.recipe)
                    checked[name] = Checked(view, layer_masks, weights, flips, model, stored)
                except ArtifactError as err:
                    problems.append(_line(art, name, err))
        finally:
            for future in [*decoded.values(), *draws.values()]:
                future.cancel()
    return Verification(checked, problems, structure)


def problems(art: Artifact) -> list[str]:
    """The problems the verification finds in every mask, without building a model (``masks`` and
    weights, tensors and method state): what ``popcli inspect`` checks of a model whose code it
    does not import."""
    return verify(art).problems
