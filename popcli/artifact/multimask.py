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

from ..codecs import CODECS
from ..errors import ArtifactError
from ..storage.strict_json import compact, loads as strict_json
from . import extras, schema
from .container import MULTI_MASK_VERSION, Artifact, MaskEntry
from .schema import Required

NAMES_KEY = "mask_names"
DEFAULT = "default"
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PER_MASK = ("recipe", "mask_codec", "metrics", "method_state")  # metadata each mask has its own copy of
# top-level entries every mask shares: a mask entry holding one would be ignored, so it is refused
SHARED_ONLY = frozenset({"format", "format_version", "generator", "generator_version", "seed", "arch", "init",
                         "method", "density", "init_density", "data", "layers", "model_source", "preprocessing",
                         "frozen", "popcli_version", "torch_version", "checkpoint_bytes", "content_sha256",
                         NAMES_KEY})


def parse_names(path: Path, meta: dict[str, str], version: int) -> list[str]:
    """The mask names of a file, the default first (["default"] for a single-mask file)."""
    if NAMES_KEY not in meta:
        if version >= MULTI_MASK_VERSION:
            raise ArtifactError(f"{path}: format version {version} without metadata {NAMES_KEY!r} (corrupt artifact)")
        return [DEFAULT]
    if version < MULTI_MASK_VERSION:
        raise ArtifactError(f"{path}: metadata {NAMES_KEY!r} in a format version {version} file; several masks are "
                            f"format version {MULTI_MASK_VERSION} (corrupt artifact)")
    try:
        found = strict_json(meta[NAMES_KEY])
    except (ValueError, RecursionError):
        found = None
    if not isinstance(found, list) or not found or not all(isinstance(n, str) and NAME.fullmatch(n) for n in found) \
            or len(set(found)) != len(found):
        raise ArtifactError(f"{path}: metadata {NAMES_KEY!r} is not a list of distinct mask names (corrupt artifact)")
    return found


def _entry(path: Path, meta: dict[str, str], name: str, shared: Required, version: int) -> MaskEntry:
    """Mask ``name``'s entry ``mask.NAME``, held to the rules of the top-level entries it replaces."""
    key = f"mask.{name}"
    entry = schema.json_entry(path, meta, key, dict)
    misplaced = sorted(set(entry) & SHARED_ONLY)
    if misplaced:
        raise schema.bad(path, key, f"holds {misplaced[0]!r}, which every mask shares (a top-level entry)")
    for field in ("recipe", "mask_codec", "kept"):
        if field not in entry:
            raise schema.bad(path, key, f"has no {field!r}")
    recipe = schema.parse_recipe(path, schema.kind_check(path, f"{key}.recipe", entry["recipe"], dict), version,
                                 f"{key}.recipe")
    codec = entry["mask_codec"]
    if codec not in CODECS:
        raise schema.bad(path, f"{key}.mask_codec", f"is {str(codec)[:40]!r}, not one of {list(CODECS)}")
    kept = schema.kind_check(path, f"{key}.kept", entry["kept"], list)
    if len(kept) != len(shared.layers):
        raise schema.bad(path, f"{key}.kept", f"lists {len(kept)} layers, the file has {len(shared.layers)}")
    layers = [replace(r, kept=schema.count(path, f"{key}.kept[{i}]", k, 0, r.numel))
              for i, (r, k) in enumerate(zip(shared.layers, kept))]
    schema.check_recipe_data(path, f"{key}.recipe", recipe, shared.data_info)
    if recipe.search.iterand_every_steps:
        raise schema.bad(path, f"{key}.recipe", "turns IteRand on, which a multi-mask file cannot hold")
    metrics = schema.check_metrics(path, schema.kind_check(path, f"{key}.metrics", entry["metrics"], dict),
                                   f"{key}.metrics") if "metrics" in entry else {}
    schema.check_kept_counts(path, recipe, layers, metrics, f"{key}.kept")
    state = extras.parse_method_state(path, f"{key}.method_state", entry.get("method_state", extras.ABSENT),
                                      recipe.search.method, layers)
    return MaskEntry(name, recipe, codec, tuple(r.kept for r in layers), metrics, state)


def parse_entries(path: Path, meta: dict[str, str], names: list[str], shared: Required,
                  version: int) -> dict[str, MaskEntry]:
    """{name: entry} of every mask but the default (whose entries are the file's own), each as
    strictly checked as the default's; a ``mask.X`` entry for a name not in ``mask_names`` is refused."""
    orphans = sorted(k for k in meta if k.startswith("mask.") and k[len("mask."):] not in names[1:])
    if orphans:
        raise ArtifactError(f"{path}: metadata {orphans[0]!r} names no mask of {NAMES_KEY!r} (corrupt artifact)")
    return {name: _entry(path, meta, name, shared, version) for name in names[1:]}


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
    try:
        check_compatible(replace(art, tensors=own), view, name)  # a mask over another seed is refused here
    except ArtifactError as err:
        raise ArtifactError(f"{art.path}: {err}") from None
    return view


def sizes(art: Artifact) -> list[dict[str, Any]]:
    """Per mask: name, kept weights, bytes of its own tensors, test accuracy recorded (as the
    entries say: whether each mask verifies is ``verification``'s question)."""
    rows = []
    for i, name in enumerate(art.header.mask_names):
        prefix = f"mask.{name}."
        own = {k: v for k, v in art.tensors.items() if (k.startswith(prefix) if i else not k.startswith("mask."))}
        kept = sum(r.kept for r in art.layers) if i == 0 else sum(art.header.masks[name].kept)
        metrics = art.header.metrics if i == 0 else art.header.masks[name].metrics
        rows.append({"name": name, "kept_weights": kept, "bytes": int(sum(np.asarray(v).nbytes for v in own.values())),
                     "test_acc": metrics.get("test_acc")})
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
    for name, art in zip(names, arts):
        if art.recipe.search.iterand_every_steps:
            raise ArtifactError(f"mask {name!r} was searched with IteRand (search.iterand_every_steps): its re-drawn "
                                f"weights are its own, so it cannot share one file's weights with other masks")
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
