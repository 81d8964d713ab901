"""``popcli inspect``: what an artifact holds, what it weighs against the dense model and the
checkpoint, and whether it verifies (every mask decoded, every weight regenerated and checked).

``inspect(path)`` reads the file (``reader.read``: no model code runs but the architecture's
structure on the meta device), lists its metadata and per-layer densities with their entropy,
the sizes and ratios, the other masks of a multi-mask file, and (``verify``) the problems that
``masks.verify`` finds for every mask. Nothing here prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import codecs, rng
from ..methods import store as method_store
from . import multimask
from .container import FORMAT_NAME, MASKS, STATE, Artifact
from .masks import verify as verify_masks
from .reader import read


def _dense_fp32_bytes(art: Artifact) -> int:
    """Size of the same model as a dense float32 safetensors file (masked weights stored as floats)."""
    entries = {r.name + ".weight": ("F32", list(r.shape), r.numel * 4) for r in art.layers}
    for key, value in art.tensors.items():
        if key.startswith(STATE):
            entries[key[len(STATE):]] = (value.dtype.str, list(value.shape), value.nbytes)
    offset, header = 0, {}
    for name, (dtype, shape, nbytes) in entries.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = len(json.dumps(header, separators=(",", ":")))
    return 8 + header_bytes + (-header_bytes % 8) + offset


def _signs(art: Artifact, report: dict[str, Any]) -> None:
    """Signed supermask: the sign stream's bytes and the ternary mask's entropy."""
    masked, kept = report["masked_weights"], report["kept_weights"]
    inverted = sum(int(i) for i in (art.header.method_state or {}).get("inverted", []))
    report["sign_bytes"] = int(art.tensors[method_store.SIGNS].nbytes)
    report["ternary_entropy_bits_per_weight"] = (codecs.entropy_bits(kept, masked)
                                                 + codecs.entropy_bits(inverted, kept)) / masked if kept else 0.0


def inspect(source: str | Path | Artifact, *, verify: bool = True) -> dict[str, Any]:
    """Metadata, per-layer table, sizes and ratios, and (``verify``) the problems found, of an
    artifact file (or of one already read)."""
    art = source if isinstance(source, Artifact) else read(source)
    header = art.header
    layers = [{"name": r.name, "shape": list(r.shape), "weights": r.numel, "kept": r.kept, "density": r.kept / r.numel,
               "entropy_bits_per_weight": codecs.entropy_bits(r.kept, r.numel) / r.numel} for r in art.layers]
    masked = art.masked_weights
    mask_bytes = int(art.tensors[MASKS].nbytes) if MASKS in art.tensors else 0
    dense = _dense_fp32_bytes(art)
    ckpt = header.checkpoint_bytes
    report = {
        "path": str(art.path), "format": f"{FORMAT_NAME} v{header.format_version}",
        "content_sha256": header.content_sha256,
        "generator": f"{rng.GENERATOR_NAME} v{header.generator_version}",
        "seed": art.recipe.seed, "arch": art.recipe.model.arch, "init": art.recipe.model.init,
        "method": art.recipe.search.method, "density": art.recipe.search.density,
        "popcli_version": header.popcli_version, "torch_version": header.torch_version,
        "metrics": header.metrics, "data": art.data_info, "model_source": header.model_source,
        "layers": layers, "masked_weights": masked, "kept_weights": sum(r.kept for r in art.layers),
        "mask_codec": art.codec, "mask_bytes": mask_bytes,
        "mask_bits_per_weight": 8 * mask_bytes / masked if masked else None,
        "entropy_bits_per_weight": (sum(codecs.entropy_bits(r.kept, r.numel) for r in art.layers) / masked
                                    if masked else None),
        "artifact_bytes": art.file_bytes,
        "bits_per_masked_weight": 8 * art.file_bytes / masked if masked else None,
        "dense_fp32_bytes": dense, "dense_over_artifact": dense / art.file_bytes,
        "checkpoint_bytes": ckpt, "checkpoint_over_artifact": ckpt / art.file_bytes if ckpt else None,
    }
    if method_store.SIGNS in art.tensors and masked:
        _signs(art, report)
    if len(header.mask_names) > 1:  # a multi-mask file: the other masks, with their own bytes
        report["masks"] = multimask.sizes(art)
    if verify:
        report["problems"] = [p for name in header.mask_names for p in verify_masks(multimask.select(art, name))]
        report["verified"] = not report["problems"]
    return report
