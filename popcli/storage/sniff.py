"""What a file that is not a popcli artifact is, from its first bytes: for messages that say
"this is an ONNX file / a search checkpoint, not a popcli artifact" instead of a parse error.

``foreign_kind(path)`` looks at magic numbers only (a PyTorch zip is opened to tell a popcli
search checkpoint from any other ``torch.save`` file); it never raises.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

# ModelProto fields that follow ir_version (field 1, varint): producer_name, producer_version,
# domain, model_version, doc_string, graph, opset_import, metadata_props (protobuf tags).
_ONNX_SECOND_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


def foreign_kind(path: str | Path) -> str | None:
    """"onnx", "popcli-checkpoint", "pytorch", or None (unknown / not one of these)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in _ONNX_SECOND_TAGS:
        return "onnx"
    if head == b"PK\x03\x04":
        return _torch_zip_kind(path)
    return None


def _torch_zip_kind(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as z:
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in z.namelist()):
                return None
    except (zipfile.BadZipFile, OSError):
        return None
    from .checkpoint import load_checkpoint
    from ..errors import PopcliError

    try:
        load_checkpoint(path)
    except PopcliError:
        return "pytorch"
    return "popcli-checkpoint"


def not_an_artifact(path: str | Path) -> str | None:
    """The message for a file that is clearly something else than a popcli artifact, or None."""
    kind = foreign_kind(path)
    if kind == "onnx":
        return (f"{path} is an ONNX file, not a popcli artifact; `popcli eval {path}` measures it, and `popcli "
                "inspect` reads the .safetensors artifact it was exported from")
    if kind == "popcli-checkpoint":
        return (f"{path} is a popcli search checkpoint, not a popcli artifact; write the artifact with "
                f"`popcli export {path} -o model.safetensors`")
    if kind == "pytorch":
        return f"{path} is a PyTorch file (torch.save), not a popcli artifact; popcli reads files written by `popcli export`"
    return None
