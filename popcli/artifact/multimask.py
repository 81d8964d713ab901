"""Many masks over one seed (SupSup, Wortsman et al. 2020, arXiv:2006.14769): one artifact, one
set of random weights, several named masks (one per task). Format: docs/FORMAT.md, version 3.

A multi-mask file is a complete single-mask artifact for its first ("default") mask, plus:

- metadata ``mask_names``: JSON list of the mask names, the default first;
- for every other mask NAME: metadata ``mask.NAME`` = JSON {"recipe", "mask_codec", "kept" (per
  masked layer), "metrics", "method_state" (when its method has one)} and tensors
  ``mask.NAME.<tensor>`` for each of its own tensors (``masks``, ``state.*``, ``method.*``).

``parse_names``/``parse_entries`` read those entries into the ``Header`` (``reader.read``);
``select(art, name)`` gives the view of one mask as a single-mask ``Artifact`` (its recipe
checked against the file's shared facts), which ``rebuild.load`` then rebuilds; ``combine``
makes the metadata and tensors of a multi-mask file from single-mask artifacts (``popcli
export --mask``, ``export.bundle``), every run checked to share the seed, the model section,
the method, the dense layers, the data shape and every layer's weight checksum. Single-mask
files (versions 1 and 2) have one mask, named ``default``. Nothing here prints.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, PopcliError
from ..recipe import from_dict
from ..storage.strict_json import compact, loads as strict_json
from .container import MULTI_MASK_VERSION, Artifact, MaskEntry
from .schema import LayerRecord

NAMES_KEY = "mask_names"
DEFAULT = "default"
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PER_MASK = ("recipe", "mask_codec", "metrics", "method_state")  # metadata each mask has its own copy of


def parse_names(path: Path, meta: dict[str, str]) -> list[str]:
    """The mask names of a file, the default first (["default"] for a single-mask file)."""
    if NAMES_KEY not in meta:
        return [DEFAULT]
    try:
        found = strict_json(meta[NAMES_KEY])
    except (ValueError, RecursionError):
        found = None
    if not isinstance(found, list) or not found or not all(isinstance(n, str) and NAME.fullmatch(n) for n in found) \
            or len(set(found)) != len(found):
        raise ArtifactError(f"{path}: metadata {NAMES_KEY!r} is not a list of distinct mask names (corrupt artifact)")
    return found


def _entry(path: Path, meta: dict[str, str], name: str, layers: list[LayerRecord]) -> MaskEntry:
    try:
        entry = strict_json(meta[f"mask.{name}"])
        raw = dict(entry["recipe"])
        if isinstance(raw.get("seed"), str) and raw["seed"].isdigit():  # format 2+: the seed as a decimal string
            raw["seed"] = int(raw["seed"])
        kept = tuple(int(k) for k in entry["kept"])
        codec = str(entry["mask_codec"])
        metrics, method_state = dict(entry.get("metrics", {})), entry.get("method_state")
    except (KeyError, TypeError, ValueError, RecursionError, AttributeError):
        raise ArtifactError(f"{path}: metadata 'mask.{name}' is missing or malformed (corrupt artifact)") from None
    try:
        recipe = from_dict(raw)
    except PopcliError as err:
        raise ArtifactError(f"{path}: mask {name!r}: its recipe is invalid ({err})") from None
    if len(kept) != len(layers):
        raise ArtifactError(f"{path}: mask {name!r} lists {len(kept)} layers, the file has {len(layers)}")
    return MaskEntry(name, recipe, codec, kept, metrics, method_state)


def parse_entries(path: Path, meta: dict[str, str], names: list[str], layers: list[LayerRecord]) -> dict[str, MaskEntry]:
    """{name: entry} of every mask but the default (whose entries are the file's own)."""
    return {name: _entry(path, meta, name, layers) for name in names[1:]}


# --------------------------------------------------------------------------- one mask's view


def _shared(art: Artifact) -> dict[str, Any]:
    """The facts every mask of one file must share: what the random weights and the graph depend on."""
    r = art.recipe
    return {"seed": r.seed, "model": vars(r.model), "method": r.search.method, "dense_first": r.search.dense_first,
            "dense_last": r.search.dense_last, "data": {k: art.data_info.get(k) for k in ("shape", "num_classes")},
            "layers": [(x.name, x.shape, x.sha256) for x in art.layers]}


def check_compatible(first: Artifact, other: Artifact, name: str) -> None:
    a, b = _shared(first), _shared(other)
    for key in a:
        if a[key] != b[key]:
            what = {"seed": "seed", "model": "model (arch, init, width, hidden, batchnorm)", "method": "search.method",
                    "layers": "random weights", "data": "input shape and classes"}.get(key, f"search.{key}")
            raise ArtifactError(f"mask {name!r} differs from the first mask in its {what} ({str(b[key])[:80]} vs "
                                f"{str(a[key])[:80]}); all masks of one file must be searched over the same seed, "
                                f"architecture and init")


def select(art: Artifact, name: str | None) -> Artifact:
    """The single-mask view of mask ``name`` (None: the default) of ``art``; ArtifactError naming
    the masks there are when ``name`` is not one of them, or when its recipe does not share the
    file's seed and model."""
    available = art.header.mask_names
    if name is not None and name not in available:
        raise ArtifactError(f"{art.path}: no mask named {name!r}; it holds: {', '.join(available)}")
    own = {k: v for k, v in art.tensors.items() if not k.startswith("mask.")}
    if name is None or name == available[0]:
        return replace(art, tensors=own)
    entry = art.header.masks[name]
    layers = [replace(record, kept=k) for record, k in zip(art.layers, entry.kept)]
    header = replace(art.header, recipe=entry.recipe, codec=entry.codec, metrics=entry.metrics,
                     method_state=entry.method_state, layers=layers)
    prefix = f"mask.{name}."
    view = replace(art, header=header, tensors={k[len(prefix):]: v for k, v in art.tensors.items() if k.startswith(prefix)})
    check_compatible(replace(art, tensors=own), view, name)  # a mask over another seed is refused here
    return view


def sizes(art: Artifact) -> list[dict[str, Any]]:
    """Per mask: name, kept weights, bytes of its own tensors, test accuracy recorded."""
    rows = []
    for name in art.header.mask_names:
        view = select(art, name)
        rows.append({"name": name, "kept_weights": sum(r.kept for r in view.layers),
                     "bytes": int(sum(np.asarray(v).nbytes for v in view.tensors.values())),
                     "test_acc": view.header.metrics.get("test_acc")})
    return rows


# --------------------------------------------------------------------------- writing one


def parse_specs(specs: list[str]) -> list[tuple[str, Path]]:
    """``["NAME=RUN", ...]`` -> [(name, run folder)], names checked and distinct."""
    pairs = []
    for spec in specs:
        name, sep, run = spec.partition("=")
        if not sep or not NAME.fullmatch(name) or not run:
            raise ArtifactError(f"--mask {spec!r}: expected NAME=RUN with NAME of letters, digits, _ or - (at most 64)")
        if name in (n for n, _ in pairs):
            raise ArtifactError(f"--mask {spec!r}: the name {name!r} is given twice")
        pairs.append((name, Path(run)))
    if not pairs:
        raise ArtifactError("no masks: pass --mask NAME=RUN once per task")
    return pairs


def _own_entries(art: Artifact) -> dict[str, Any]:
    """A single-mask artifact's per-mask entries, as ``mask.NAME`` holds them."""
    entry = {key: json.loads(art.metadata[key]) if key != "mask_codec" else art.metadata[key]
             for key in _PER_MASK if key in art.metadata}
    entry["kept"] = [r.kept for r in art.layers]
    return entry


def combine(names: list[str], arts: list[Artifact]) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, tensors) of one multi-mask file holding the single-mask ``arts`` as masks ``names``
    (the first is the default), every mask checked to share the first's seed and model."""
    for name, art in zip(names[1:], arts[1:]):
        check_compatible(arts[0], art, name)
    metadata = {k: v for k, v in arts[0].metadata.items() if k != "content_sha256"}
    metadata["format_version"] = str(MULTI_MASK_VERSION)
    metadata[NAMES_KEY] = compact(list(names))
    tensors = dict(arts[0].tensors)
    for name, art in zip(names[1:], arts[1:]):
        metadata[f"mask.{name}"] = compact(_own_entries(art))
        tensors.update({f"mask.{name}.{key}": value for key, value in art.tensors.items()})
    return metadata, tensors
