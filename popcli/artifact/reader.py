"""Reading an artifact: the file opened and every header entry parsed once into a ``Header`` and
checked, the other masks' entries as strictly as the first's. No model is built here.

``read(path)`` is the first step of the one pipeline ``inspect`` and ``load`` share: open
(``container.read_raw``: versions, content checksum), parse (``schema``: the required entries;
``extras``: the optional ones; ``multimask``: the other masks', each held to the rules of the
entries it replaces), check the stored tensors' values. Nothing is allocated from what the
metadata claims and no model code is imported; ``verify`` checks the rest (masks, weights,
method state, the model's structure). Nothing here prints.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from . import extras, multimask, schema
from .container import Artifact, Header, read_raw


def _fields(record) -> dict:
    return {f.name: getattr(record, f.name) for f in fields(record)}


def read(path: str | Path) -> Artifact:
    """Open and parse an artifact: versions, content checksum, every metadata entry (every mask's),
    the stored values. Nothing is allocated from what the metadata claims; nothing is imported."""
    path = Path(path)
    meta, tensors, size, (format_version, generator_version) = read_raw(path)
    required = schema.parse(path, meta, format_version)
    schema.check_tensors(path, tensors)
    optional = extras.parse(path, meta, required.recipe, required.data_info, required.layers)
    names = multimask.parse_names(path, meta, format_version)
    header = Header(format_version=format_version, generator_version=generator_version, **_fields(required),
                    **_fields(optional), mask_names=names,
                    masks=multimask.parse_entries(path, meta, names, required, format_version))
    return Artifact(path, header, tensors, size, meta)
