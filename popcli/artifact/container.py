"""The artifact file: one safetensors file, its format constants, its checksum, and the typed
object every reader of an artifact takes (``Artifact``, its ``Header`` parsed once).

``read_raw(path)`` opens a file as popcli's (header JSON, versions, tensors, content checksum)
without interpreting its entries; ``reader.read`` parses them into a ``Header`` and checks them.
``seal(metadata, tensors)`` is the file's bytes with ``content_sha256`` added (docs/FORMAT.md):
what ``writer.save`` and multi-mask files write. Nothing here builds a model or prints.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import rng
from ..errors import ArtifactError, ArtifactNotFound
from ..recipe import Recipe
from ..storage.strict_json import loads as strict_json
from .schema import LayerRecord

FORMAT_NAME = "popcli-artifact"
FORMAT_VERSION = 2  # 2: true shapes of 0-d tensors in content_sha256, the recipe's seed as a string
MULTI_MASK_VERSION = 3  # 2 + several named masks over one seed (artifact.multimask); written for multi-mask files only
READABLE_VERSIONS = (1, 2, 3)
MASKS, STATE = "masks", "state."
MAX_HEADER = 100 << 20  # a header larger than this is not one popcli wrote
# the safetensors dtypes an artifact may hold (docs/FORMAT.md, content_sha256): numpy's; BF16 and F8 have no numpy dtype
DTYPES = ("U8", "I8", "BOOL", "F16", "F32", "F64", "I16", "I32", "I64", "U16", "U32", "U64")


@dataclass(frozen=True)
class MaskEntry:
    """One more mask of a multi-mask file (metadata ``mask.NAME``), parsed and checked."""

    name: str
    recipe: Recipe
    codec: str
    kept: tuple[int, ...]  # per masked layer
    metrics: dict[str, Any]
    method_state: dict[str, Any] | None


@dataclass(frozen=True)
class Header:
    """Every metadata entry of an artifact, parsed and checked (docs/FORMAT.md names each one)."""

    format_version: int
    generator_version: int
    content_sha256: str
    codec: str  # mask_codec
    recipe: Recipe  # the resolved recipe: seed, model, method, densities
    data_info: dict[str, Any]  # {"shape": [C, H, W], "num_classes": K}
    layers: list[LayerRecord]
    metrics: dict[str, Any]
    checkpoint_bytes: int | None
    popcli_version: str | None
    torch_version: str | None
    preprocessing: dict[str, Any] | None = None  # optional entries (extras)
    method_state: dict[str, Any] | None = None
    model_source: dict[str, Any] | None = None
    frozen: list[dict[str, Any]] = field(default_factory=list)
    iterand: dict[str, Any] | None = None  # IteRand's draws entry (artifact.redraws)
    mask_names: list[str] = field(default_factory=lambda: ["default"])  # the default (this header's) first
    masks: dict[str, MaskEntry] = field(default_factory=dict)  # the other masks, by name


@dataclass
class Artifact:
    """An artifact file as read: its parsed header, the raw tensors and the file's size.
    ``metadata`` keeps the raw strings only for re-sealing (multi-mask files); read ``header``."""

    path: Path
    header: Header
    tensors: dict[str, np.ndarray]
    file_bytes: int
    metadata: dict[str, str]

    @property
    def recipe(self) -> Recipe:
        return self.header.recipe

    @property
    def data_info(self) -> dict[str, Any]:
        return self.header.data_info

    @property
    def layers(self) -> list[LayerRecord]:
        return self.header.layers

    @property
    def codec(self) -> str:
        return self.header.codec

    @property
    def masked_weights(self) -> int:
        return sum(layer.numel for layer in self.layers)


# --------------------------------------------------------------------------- checksum and bytes


def _canonical(metadata: dict[str, str]) -> bytes:
    return json.dumps({k: v for k, v in metadata.items() if k != "content_sha256"}, sort_keys=True,
                      separators=(",", ":")).encode()


def content_sha256(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over every tensor (sorted by name: name, dtype, shape, bytes) and the metadata.
    Format version 1 wrote the shape of a 0-d tensor as [1] (numpy's ascontiguousarray); 2 as []."""
    legacy = metadata.get("format_version") == "1"
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name]) if legacy else np.asarray(tensors[name], order="C")
        digest.update(f"{name}\n{array.dtype.str}\n{list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    digest.update(_canonical(metadata))
    return digest.hexdigest()


def seal(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> bytes:
    """The safetensors bytes of ``tensors`` with ``metadata`` plus its ``content_sha256``."""
    from safetensors.numpy import save as safetensors_bytes

    metadata = {k: v for k, v in metadata.items() if k != "content_sha256"}
    metadata["content_sha256"] = content_sha256(metadata, tensors)
    return safetensors_bytes(tensors, metadata=metadata)


# --------------------------------------------------------------------------- opening a file


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts like safetensors (an artifact, or an error saying why not)."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(9)[8:9] == b"{"  # 8 bytes of header length, then the JSON header


def _header_json(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header JSON of ``path`` and the file size, with popcli's own checks."""
    if not path.is_file():
        if not path.exists():
            raise ArtifactNotFound(f"{str(path)!r} not found; pass the path of an artifact (.safetensors) written by "
                                   f"popcli export or popcli.save")
        raise ArtifactError(f"{str(path)!r} is not a file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ArtifactError(f"{path}: {size} bytes is too short for a safetensors file (truncated?)")
        length = int.from_bytes(head, "little")
        if length > min(MAX_HEADER, size - 8):
            from ..storage.sniff import not_an_artifact

            foreign = not_an_artifact(path)
            if foreign:
                raise ArtifactError(foreign)
            raise ArtifactError(f"{path}: not a safetensors file, or truncated (header length {length} does not fit "
                                f"in {size} bytes); re-export it")
        raw = f.read(length)
    try:
        header = strict_json(raw)  # duplicate keys would read differently here and in safetensors
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ArtifactError(f"{path}: the safetensors header is not valid JSON (corrupt file); re-export it") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: the safetensors header is not a JSON object (corrupt file); re-export it")
    return header, size


def check_versions(path: Path, meta: dict[str, str]) -> tuple[int, int]:
    """(format version, generator version) of a popcli artifact this popcli can read; else ArtifactError."""
    if meta.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path}: a safetensors file but not a popcli artifact (no format={FORMAT_NAME} in "
                            f"its metadata); popcli loads files written by `popcli export`")
    versions = []
    for key, name, supported in (("format_version", FORMAT_NAME, max(READABLE_VERSIONS)),
                                 ("generator_version", rng.GENERATOR_NAME, rng.GENERATOR_VERSION)):
        text = meta.get(key, "")
        if not (text.isascii() and text.isdigit() and len(text) <= 9 and text == str(int(text))):  # canonical
            raise ArtifactError(f"{path}: {key} {text[:40]!r} is not a number (corrupt metadata)")
        version = int(text)
        if version > supported:
            raise ArtifactError(f"{path}: {name} version {version} is newer than this popcli's ({supported}); "
                                f"upgrade popcli (pip install -U popcli)")
        if version < 1:
            raise ArtifactError(f"{path}: {key} {version} is not a valid version (corrupt metadata)")
        versions.append(version)
    if meta.get("generator") != rng.GENERATOR_NAME:
        raise ArtifactError(f"{path}: weight generator {meta.get('generator')!r} is unknown to this popcli "
                            f"(it has {rng.GENERATOR_NAME}); upgrade popcli")
    return versions[0], versions[1]


def read_raw(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray], int, tuple[int, int]]:
    """(metadata strings, tensors, file size, (format, generator) versions) of a popcli artifact whose
    content checksum matches; its entries are not interpreted yet (``reader.read`` does that)."""
    header, size = _header_json(path)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ArtifactError(f"{path}: a safetensors file but not a popcli artifact (no string __metadata__)")
    versions = check_versions(path, meta)
    for name, entry in header.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) and name != "__metadata__" else None
        if dtype is not None and dtype not in DTYPES:
            raise ArtifactError(f"{path}: tensor {str(name)[:60]!r} is {str(dtype)[:12]}, a dtype popcli artifacts never "
                                f"hold (they hold {', '.join(DTYPES)}); the file was not written by popcli export")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise ArtifactError(f"{path}: the tensor data is unreadable ({str(err).splitlines()[0][:120]}); the file is "
                            f"truncated or corrupt, re-export it") from None
    if content_sha256(meta, tensors) != meta.get("content_sha256"):
        raise ArtifactError(f"{path}: content checksum mismatch: the file was modified or corrupted after export; "
                            f"re-export it")
    return meta, tensors, size, versions
