"""Many masks over one seed (SupSup, Wortsman et al. 2020, arXiv:2006.14769): one artifact, one
set of random weights, several named masks (one per task). Format: docs/FORMAT.md, version 3.

A multi-mask file is a complete single-mask artifact for its first ("default") mask, plus:

- metadata ``mask_names``: JSON list of the mask names, the default first;
- for every other mask NAME: metadata ``mask.NAME`` = JSON {"recipe", "mask_codec", "kept" (per
  masked layer), "metrics", "method_state" (when its method has one)} and tensors
  ``mask.NAME.<tensor>`` for each of its own tensors (``masks``, ``state.*``, ``method.*``).

``write(specs, out)`` builds one from search runs (every run must share the seed, the model
section, the method, the dense layers and the data shape: checked, and so must every layer's
weight checksum); ``select(art, name)`` gives the view of one mask as a single-mask ``Artifact``
(its recipe checked against the file's shared facts), which ``artifact.load`` then rebuilds.
Single-mask files (versions 1 and 2) have one mask, named ``default``. Nothing here prints.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import artifact
from .checkpoint import write_atomic
from .errors import ArtifactError
from .recipe import from_dict

FORMAT_VERSION = 3
NAMES_KEY = "mask_names"
DEFAULT = "default"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PER_MASK = ("recipe", "mask_codec", "metrics", "method_state")  # metadata each mask has its own copy of


def names(art: artifact.Artifact) -> list[str]:
    """The mask names of an artifact, the default first (["default"] for a single-mask file)."""
    if NAMES_KEY not in art.metadata:
        return [DEFAULT]
    try:
        found = json.loads(art.metadata[NAMES_KEY])
    except json.JSONDecodeError:
        found = None
    if not isinstance(found, list) or not found or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in found) \
            or len(set(found)) != len(found):
        raise ArtifactError(f"{art.path}: metadata {NAMES_KEY!r} is not a list of distinct mask names (corrupt artifact)")
    return found


def parse_specs(specs: list[str]) -> list[tuple[str, Path]]:
    """``["NAME=RUN", ...]`` -> [(name, run folder)], names checked and distinct."""
    pairs = []
    for spec in specs:
        name, sep, run = spec.partition("=")
        if not sep or not _NAME.fullmatch(name) or not run:
            raise ArtifactError(f"--mask {spec!r}: expected NAME=RUN with NAME of letters, digits, _ or - (at most 64)")
        if name in (n for n, _ in pairs):
            raise ArtifactError(f"--mask {spec!r}: the name {name!r} is given twice")
        pairs.append((name, Path(run)))
    if not pairs:
        raise ArtifactError("no masks: pass --mask NAME=RUN once per task")
    return pairs


def _shared(art: artifact.Artifact) -> dict[str, Any]:
    """The facts every mask of one file must share: what the random weights and the graph depend on."""
    r = art.recipe
    return {"seed": r.seed, "model": vars(r.model), "method": r.search.method, "dense_first": r.search.dense_first,
            "dense_last": r.search.dense_last, "data": {k: art.data_info.get(k) for k in ("shape", "num_classes")},
            "layers": [(x.name, x.shape, x.sha256) for x in art.layers]}


def check_compatible(first: artifact.Artifact, other: artifact.Artifact, name: str) -> None:
    a, b = _shared(first), _shared(other)
    for key in a:
        if a[key] != b[key]:
            what = {"seed": "seed", "model": "model (arch, init, width, hidden, batchnorm)", "method": "search.method",
                    "layers": "random weights", "data": "input shape and classes"}.get(key, f"search.{key}")
            raise ArtifactError(f"mask {name!r} differs from the first mask in its {what} ({str(b[key])[:80]} vs "
                                f"{str(a[key])[:80]}); all masks of one file must be searched over the same seed, "
                                f"architecture and init")


def _entry(art: artifact.Artifact) -> dict[str, Any]:
    entry = {key: json.loads(art.metadata[key]) if key != "mask_codec" else art.metadata[key]
             for key in _PER_MASK if key in art.metadata}
    entry["kept"] = [r.kept for r in art.layers]
    return entry


def write(specs: list[str], out: str | Path, *, codec: str = "auto", force: bool = False) -> artifact.Artifact:
    """One artifact holding the masks of several runs (``NAME=RUN`` each), verified as written."""
    from .export import export as export_one

    out = Path(out)
    artifact.check_output(out, force, "-o")
    pairs = parse_specs(specs)
    with tempfile.TemporaryDirectory() as tmp:  # the system's: the output folder may be read-only (one error, below)
        arts = []
        for i, (name, run) in enumerate(pairs):
            export_one(run, Path(tmp) / f"{i}.safetensors", codec=codec)
            arts.append(artifact.read(Path(tmp) / f"{i}.safetensors"))
        for (name, _), art in zip(pairs[1:], arts[1:]):
            check_compatible(arts[0], art, name)
        metadata = {k: v for k, v in arts[0].metadata.items() if k != "content_sha256"}
        metadata["format_version"] = str(FORMAT_VERSION)
        metadata[NAMES_KEY] = json.dumps([n for n, _ in pairs], separators=(",", ":"))
        tensors = dict(arts[0].tensors)
        for (name, _), art in zip(pairs[1:], arts[1:]):
            metadata[f"mask.{name}"] = json.dumps(_entry(art), separators=(",", ":"))
            tensors.update({f"mask.{name}.{key}": value for key, value in art.tensors.items()})
    metadata["content_sha256"] = artifact.content_sha256(metadata, tensors)
    from safetensors.numpy import save as safetensors_bytes

    write_atomic(out, safetensors_bytes(tensors, metadata=metadata), exclusive=not force)
    written = artifact.read(out)
    for name in names(written):
        problems = artifact.verify(select(written, name))
        if problems:
            raise ArtifactError(f"{out}: mask {name!r} does not verify: {problems[0]}")
    return written


def select(art: artifact.Artifact, name: str | None) -> artifact.Artifact:
    """The single-mask view of mask ``name`` (None: the default) of ``art``; ArtifactError naming
    the masks there are when ``name`` is not one of them, or when its recipe does not share the
    file's seed and model."""
    available = names(art)
    if name is not None and name not in available:
        raise ArtifactError(f"{art.path}: no mask named {name!r}; it holds: {', '.join(available)}")
    own = {k: v for k, v in art.tensors.items() if not k.startswith("mask.")}
    if name is None or name == available[0]:
        return replace(art, tensors=own)
    try:
        entry = json.loads(art.metadata[f"mask.{name}"])
        raw = dict(entry["recipe"])
        if isinstance(raw.get("seed"), str) and raw["seed"].isdigit():  # format 2+: the seed as a decimal string
            raw["seed"] = int(raw["seed"])
        recipe = from_dict(raw)
        kept = [int(k) for k in entry["kept"]]
        codec = str(entry["mask_codec"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        raise ArtifactError(f"{art.path}: metadata 'mask.{name}' is missing or malformed (corrupt artifact)") from None
    except ArtifactError:
        raise
    except Exception as err:  # a PopcliError from the recipe
        raise ArtifactError(f"{art.path}: mask {name!r}: its recipe is invalid ({err})") from None
    if len(kept) != len(art.layers):
        raise ArtifactError(f"{art.path}: mask {name!r} lists {len(kept)} layers, the file has {len(art.layers)}")
    layers = [replace(record, kept=k) for record, k in zip(art.layers, kept)]
    metadata = dict(art.metadata)
    metadata.pop("method_state", None)
    metadata.update({"recipe": json.dumps(entry["recipe"]), "mask_codec": codec,
                     "metrics": json.dumps(entry.get("metrics", {})),
                     "layers": json.dumps([r.to_json() for r in layers], separators=(",", ":"))})
    if "method_state" in entry:
        metadata["method_state"] = json.dumps(entry["method_state"])
    prefix = f"mask.{name}."
    tensors = {k[len(prefix):]: v for k, v in art.tensors.items() if k.startswith(prefix)}
    view = replace(art, metadata=metadata, recipe=recipe, layers=layers, tensors=tensors)
    check_compatible(replace(art, tensors=own), view, name)  # a mask over another seed is refused here
    return view


def sizes(art: artifact.Artifact) -> list[dict[str, Any]]:
    """Per mask: name, kept weights, bytes of its own tensors, test accuracy recorded."""
    rows = []
    for name in names(art):
        view = select(art, name)
        rows.append({"name": name, "kept_weights": sum(r.kept for r in view.layers),
                     "bytes": int(sum(np.asarray(v).nbytes for v in view.tensors.values())),
                     "test_acc": json.loads(view.metadata.get("metrics", "{}")).get("test_acc")})
    return rows
