"""Reading an artifact: the file opened, every header entry parsed once into a ``Header`` and
checked, and the layer records checked against the architecture built on the meta device.

``read(path)`` is the first half of the one pipeline ``inspect`` and ``load`` share: open
(``container.read_raw``: versions, content checksum), parse (``schema``: the required entries;
``extras``: the optional ones; ``multimask``: the other masks'), check the stored tensors, then
build the model's structure on the meta device (``skeleton``) and check the file's masked layers
and stored tensors against it. Nothing is allocated from what the metadata claims before that;
decoding masks and regenerating weights is ``masks``' job. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import ArtifactError, PopcliError
from ..methods import store as method_store
from ..models import build_architecture, masked_layers
from ..models.external import require_source
from . import extras, multimask, schema
from .container import MASKS, MULTI_MASK_VERSION, STATE, Artifact, Header, read_raw
from .frozen import fill_frozen


def _fields(record) -> dict:
    return {f.name: getattr(record, f.name) for f in fields(record)}


def read(path: str | Path) -> Artifact:
    """Open and validate an artifact: versions, content checksum, every metadata entry, the layer
    records against the architecture built on the meta device. Nothing is allocated from what the
    metadata claims."""
    path = Path(path)
    meta, tensors, size, (format_version, generator_version) = read_raw(path)
    required = schema.parse(path, meta, format_version)
    schema.check_tensors(path, tensors)
    optional = extras.parse(path, meta, required.recipe, required.data_info, required.layers)
    names = multimask.parse_names(path, meta)
    header = Header(format_version=format_version, generator_version=generator_version, **_fields(required),
                    **_fields(optional), mask_names=names,
                    masks=multimask.parse_entries(path, meta, names, required.layers))
    art = Artifact(path, header, tensors, size, meta)
    model = skeleton(art)
    check_structure(model, art)  # before anything the layer records size is allocated
    check_state(model, art)  # (a multi-mask file's first mask: the others' tensors are under "mask.")
    return art


def _input(art: Artifact) -> tuple[int, int | tuple[int, int], int]:
    """(in_channels, image_size (H, or (H, W) when not square), num_classes) from the header."""
    (channels, height, width), classes = (int(d) for d in art.data_info["shape"]), int(art.data_info["num_classes"])
    return channels, (height if height == width else (height, width)), classes  # a builder's image_size


def skeleton(art: Artifact) -> nn.Module:
    """The artifact's architecture on the meta device: structure only, nothing allocated."""
    channels, size, classes = _input(art)
    try:  # a user's model: its package must be importable here (one line naming it otherwise)
        require_source(art.recipe.model.arch, art.header.model_source)
    except PopcliError as err:
        raise ArtifactError(f"{art.path}: {err}") from None
    try:
        with torch.device("meta"):  # every tensor is filled later from the seed and the file
            return build_architecture(art.recipe.model, art.recipe.search, in_channels=channels, image_size=size,
                                      num_classes=classes)
    except PopcliError as err:  # already one line that names the fix
        raise ArtifactError(f"{art.path}: cannot build its model: {err}") from None
    except (ValueError, TypeError, RuntimeError, OverflowError, ZeroDivisionError) as err:
        raise ArtifactError(f"{art.path}: cannot build its model: {str(err).splitlines()[0][:160]}") from None


def check_structure(model: nn.Module, art: Artifact) -> list[nn.Module]:
    """The model's subnet layers, checked to be the file's (names and shapes, in order)."""
    layers = masked_layers(model)
    found = [(name, tuple(layer.weight.shape)) for name, layer in layers]
    if found != [(r.name, r.shape) for r in art.layers]:
        raise ArtifactError(f"{art.path}: the masked layers of {art.recipe.model.arch!r} built by this popcli differ "
                            f"from the file's ({len(found)} vs {len(art.layers)} layers); was it written by another "
                            f"version of the architecture?")
    extra = {k for k in art.tensors if not k.startswith(STATE)} - ({MASKS} if art.layers else set())
    extra -= set(method_store.method_tensors())  # checked by method_store.restore
    if art.header.format_version == MULTI_MASK_VERSION:  # the other masks' own: artifact.multimask
        extra = {k for k in extra if not k.startswith("mask.")}
    if extra:
        raise ArtifactError(f"{art.path}: unexpected tensor {sorted(extra)[0]!r} (corrupt artifact)")
    return [layer for _, layer in layers]


def check_state(model: nn.Module, art: Artifact) -> dict[str, np.ndarray]:
    """The file's ``state.`` tensors {model key: array}, checked: exactly the model's keys, shapes, dtypes."""
    skip = {f"{name}.{p}" if name else p for name, _ in masked_layers(model) for p in ("weight", "scores")}
    skip.update(fill_frozen(model, art))  # frozen biases / parameters: regenerated from the seed, checked
    wanted = {k: v for k, v in model.state_dict(keep_vars=True).items() if k not in skip}
    stored = {k[len(STATE):]: v for k, v in art.tensors.items() if k.startswith(STATE)}
    for key in sorted(set(wanted) ^ set(stored)):
        side = "missing from the file" if key in wanted else "unexpected in the file"
        raise ArtifactError(f"{art.path}: tensor {key!r} is {side} for {art.recipe.model.arch!r} (corrupt artifact, or "
                            f"written by another version of the architecture)")
    for key, value in stored.items():
        if tuple(value.shape) != tuple(wanted[key].shape) or torch.from_numpy(value.reshape(-1)[:0]).dtype != wanted[key].dtype:
            raise ArtifactError(f"{art.path}: tensor {key!r} is {value.dtype} {list(value.shape)}, the model needs "
                                f"{wanted[key].dtype} {list(wanted[key].shape)} (corrupt artifact)")
    return stored
