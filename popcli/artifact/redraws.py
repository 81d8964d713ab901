"""The IteRand entry of an artifact: which draw each KEPT weight holds (docs/FORMAT.md, "IteRand
draws"; the method: ``methods.iterand``).

A file whose recipe has ``search.iterand_every_steps`` > 0 holds

- tensor ``iterand.draws``: uint8 [bytes], the draw numbers of the kept weights of every masked
  layer (flat order, layers in order) coded by ``codecs.encode_counts`` (one bit "re-drawn" per
  kept weight, then the unary rest, by the mask codecs);
- metadata ``iterand``: JSON {"codec": "packbits" | "rans", "redrawn": [int per masked layer:
  kept weights whose draw is > 0], "draws": [int per layer: the sum of their draw numbers],
  "sha256": [hex per layer: SHA-256 of the weight as loaded, kept weights at their draw and
  pruned ones at draw 0]}.

A file without IteRand has neither: every weight is draw 0, as before. ``encode`` makes the entry
from a searched model, ``parse`` checks the metadata at read time (``extras``), ``apply`` decodes
the stream and gives each verified layer its redrawn weights (``verification``, for inspect and
load alike). Nothing here prints.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import codecs, rng
from ..errors import ArtifactError
from ..methods import iterand
from ..storage.strict_json import compact
from .schema import LayerRecord, bad, is_int

DRAWS = "iterand.draws"
KEY = "iterand"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def enabled(recipe) -> bool:
    return bool(recipe.search.iterand_every_steps)


def loaded_weight(base: torch.Tensor, seed: int, name: str, init: str, density: float, kept: np.ndarray,
                  draws: np.ndarray) -> torch.Tensor:
    """The weight a file holds: ``base`` (draw 0) with each kept weight i at draw ``draws[i]``
    (``kept``: bool [numel]; ``draws``: the kept weights' draw numbers, in flat order)."""
    if not draws.any():
        return base
    full = np.zeros(base.numel(), dtype=np.int64)
    full[kept] = draws
    return rng.redrawn_weight(seed, name, base.shape, init, density, full)


def encode(model_layers, masks: list[np.ndarray], bases: list[torch.Tensor], recipe, density: float,
           codec: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of the entry for the searched ``model_layers`` [(name, layer)] with their
    flat bool ``masks`` and draw-0 weights ``bases`` ({} , {} without IteRand)."""
    if not enabled(recipe):
        return {}, {}
    counts, digests = [], []
    for (name, layer), mask, base in zip(model_layers, masks, bases):
        found = iterand.draws_of(layer)
        kept_draws = (np.zeros(int(mask.sum()), dtype=np.int64) if found is None
                      else found.detach().cpu().reshape(-1).numpy().astype(np.int64)[mask])
        counts.append(kept_draws)
        digests.append(rng.weight_sha256(loaded_weight(base, recipe.seed, name, recipe.model.init, density, mask,
                                                       kept_draws)))
    chosen, data, redrawn, total = codecs.encode_counts(counts, codec)
    state = {"codec": chosen, "redrawn": redrawn, "draws": total, "sha256": digests}
    return {DRAWS: data}, {KEY: compact(state)}


def parse(path: Path, meta: dict[str, str], recipe, layers: list[LayerRecord], json_entry) -> dict[str, Any] | None:
    """The ``iterand`` entry checked: present exactly when the recipe turns IteRand on; lists of one
    value per masked layer, counts in range (0 <= redrawn <= kept, redrawn <= draws <=
    kept * MAX_DRAW, draws > 0 exactly when redrawn > 0), a codec, SHA-256 hex digests."""
    if not enabled(recipe):
        if KEY in meta:
            raise bad(path, KEY, "is present, but the recipe's search.iterand_every_steps is 0")
        return None
    if KEY not in meta:
        raise ArtifactError(f"{path}: metadata has no {KEY!r}, which search.iterand_every_steps > 0 needs (corrupt or "
                            f"incomplete artifact); re-export it")
    state = json_entry(path, meta, KEY, dict)
    if state.get("codec") not in codecs.CODECS:
        raise bad(path, f"{KEY}.codec", f"is {str(state.get('codec'))[:20]!r}, not one of {list(codecs.CODECS)}")
    for name in ("redrawn", "draws", "sha256"):
        if not isinstance(state.get(name), list) or len(state[name]) != len(layers):
            raise bad(path, f"{KEY}.{name}", f"does not list the {len(layers)} masked layers")
    for r, t, record in zip(state["redrawn"], state["draws"], layers):
        if not (is_int(r) and is_int(t) and 0 <= r <= record.kept and r <= t <= record.kept * rng.MAX_DRAW
                and (r > 0) == (t > 0)):
            raise bad(path, KEY, f"counts {str(r)[:20]}, {str(t)[:20]} of layer {record.name!r} are not 0 <= redrawn <= "
                                 f"kept ({record.kept}), redrawn <= draws <= kept * {rng.MAX_DRAW}")
    if not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in state["sha256"]):
        raise bad(path, f"{KEY}.sha256", "holds a value that is not a SHA-256 hex digest")
    return state


def decode(view, masks: list[np.ndarray]) -> list[np.ndarray] | None:
    """The kept weights' draw numbers per masked layer (int64 [kept]), or None without IteRand."""
    state = view.header.iterand
    if state is None:
        if DRAWS in view.tensors:
            raise ArtifactError(f"{view.path}: tensor {DRAWS!r} in a file without IteRand (corrupt artifact)")
        return None
    data = view.tensors.get(DRAWS)
    if data is None or data.dtype != np.uint8 or data.ndim != 1:
        found = "no" if data is None else f"a {data.dtype} {list(data.shape)}"
        raise ArtifactError(f"{view.path}: {found} {DRAWS!r} tensor, expected uint8 [bytes] (corrupt artifact)")
    kept = [int(np.count_nonzero(m)) for m in masks]
    try:
        draws = codecs.decode_counts(data, kept, state["redrawn"], state["draws"], state["codec"])
    except codecs.CodecError as err:
        raise ArtifactError(f"{view.path}: {DRAWS}: {err}") from None
    for record, found in zip(view.layers, draws):
        if found.size and int(found.max()) > rng.MAX_DRAW:
            raise ArtifactError(f"{view.path}: {DRAWS}: layer {record.name!r} holds a draw above {rng.MAX_DRAW} "
                                f"(corrupt artifact)")
    return draws


def apply(view, masks: list[np.ndarray], weights: list[torch.Tensor], density: float) -> list[torch.Tensor]:
    """``weights`` (draw 0, shared between masks: never changed in place) with every kept weight at
    its draw, each checked against the entry's SHA-256; ``weights`` itself without IteRand."""
    draws = decode(view, masks)
    if draws is None:
        return weights
    out, recipe = [], view.recipe
    for record, mask, base, kept_draws, digest in zip(view.layers, masks, weights, draws, view.header.iterand["sha256"]):
        weight = loaded_weight(base, recipe.seed, record.name, recipe.model.init, density, mask, kept_draws)
        if rng.weight_sha256(weight) != digest:
            raise ArtifactError(f"{view.path}: layer {record.name!r}: the weights re-drawn as {DRAWS!r} says do not "
                                f"match metadata {KEY!r}'s checksum (corrupt artifact, or another generator)")
        out.append(weight)
    return out
