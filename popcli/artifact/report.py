"""``popcli inspect``: what an artifact holds, what it weighs against the dense model and the
checkpoint, and whether it verifies.

``inspect(path)`` reads the file (``reader.read``), lists its metadata, the model builder it names
(``builder``: found without importing anything), per-layer densities with their entropy, the
sizes and ratios, the other masks of a multi-mask file, and (``verify``) the problems that the
verification ``popcli.load`` runs (``verification.verify``) finds in every mask. It never imports a
model's code: the structure is checked on the meta device for popcli's own architectures (and
names registered in this process) and, with ``trust_code``, for a trusted user's builder;
otherwise ``structure_checked`` is false and the report shows the recorded builder and
package instead. Nothing here prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import codecs, rng
from ..methods import store as method_store
from . import multimask, redraws
from .finish import packable
from .container import FORMAT_NAME, MASKS, STATE, Artifact
from .reader import read
from .structure import builder, skeleton
from .verification import verify as verify_all


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


def _inference_bytes(art: Artifact) -> dict[str, int | None]:
    """Bytes the weights hold at inference, per way to run the model (computed from the header, as
    ``nn.packed.resident_bytes`` counts a loaded model): masked layers as fp32 (``load()``, and the
    fp32 and compact ONNX files once ONNX Runtime has unpacked them), as int8 (the int8 ONNX file:
    one byte each), and as keep + sign bits with a float32 scale and shift per output row
    (``load(mode="packed")``, None where the weights are not +-c); plus the other stored tensors
    (batch-norm statistics, biases) as they are."""
    other = sum(int(value.nbytes) for key, value in art.tensors.items() if key.startswith(STATE))
    masked = art.masked_weights
    packed = sum(2 * r.shape[0] * -(-(r.numel // r.shape[0]) // 8) + 8 * r.shape[0] for r in art.layers)
    return {"fp32": 4 * masked + other, "int8": masked + other, "packed": packed + other if packable(art) else None}


def _signs(art: Artifact, report: dict[str, Any]) -> None:
    """Signed supermask: the sign stream's bytes and the ternary mask's entropy."""
    masked, kept = report["masked_weights"], report["kept_weights"]
    inverted = sum(int(i) for i in (art.header.method_state or {}).get("inverted", []))
    report["sign_bytes"] = int(art.tensors[method_store.SIGNS].nbytes)
    report["ternary_entropy_bits_per_weight"] = (codecs.entropy_bits(kept, masked)
                                                 + codecs.entropy_bits(inverted, kept)) / masked if kept else 0.0


def inspect(source: str | Path | Artifact, *, verify: bool = True, trust_code: bool = False) -> dict[str, Any]:
    """Metadata, per-layer table, sizes and ratios, and (``verify``) the problems found, of an
    artifact file (or of one already read). ``trust_code``: also check the structure of a user's
    model by importing its builder (what ``popcli export`` does for a model it just built)."""
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
        "inference_bytes": _inference_bytes(art),
        "checkpoint_bytes": ckpt, "checkpoint_over_artifact": ckpt / art.file_bytes if ckpt else None,
    }
    if method_store.SIGNS in art.tensors and masked:
        _signs(art, report)
    if header.iterand is not None:  # IteRand: the bytes of the kept weights' draw numbers
        report["iterand_draw_bytes"] = int(art.tensors[redraws.DRAWS].nbytes) if redraws.DRAWS in art.tensors else 0
        report["iterand_redrawn_kept"] = int(sum(header.iterand["redrawn"]))
    z = art.tensors.get(method_store.Z)
    if z is not None and isinstance(header.method_state, dict):  # subspace: seed + z, w = w0 + P z
        report["subspace"] = {"projection": header.method_state.get("projection"), "dim": int(z.size),
                              "dtype": str(z.dtype), "z_bytes": int(z.nbytes)}
    if len(header.mask_names) > 1:  # a multi-mask file: the other masks, with their own bytes
        report["masks"] = multimask.sizes(art)
    info = builder(art)
    report["builder"] = info.to_json()
    if verify:  # build the structure only where nothing is imported, or the caller trusts the code
        allowed = info.imported or info.kind == "unknown" or (trust_code and info.kind != "none")
        result = verify_all(art, skeleton if allowed else None)
        report["problems"], report["verified"] = result.problems, not result.problems
        report["structure_checked"] = result.structure
    return report
