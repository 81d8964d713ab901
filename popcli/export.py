"""``popcli export`` and ``popcli inspect``: a search run -> an artifact and/or ONNX, and what an
artifact holds.

``export(source, out, onnx=...)`` rebuilds the searched model from a run folder (its last.pt) or
a checkpoint, writes the artifact (``artifact.save``) and verifies the written file; with
``onnx`` it also writes a verified ONNX graph (``deploy.export_onnx``), from a run or from an
artifact alone. ``inspect(path)`` reports the metadata, per-layer densities and sizes (artifact,
dense fp32, search checkpoint) and verifies masks, kept counts and weight checksums. Nothing
here prints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from . import artifact, codecs
from .artifact_schema import STATIC_DATA
from .checkpoint import load_checkpoint
from .errors import ArtifactError, RunError, UsageError
from .models import build_model, input_size
from .recipe import Recipe, from_dict

def find_checkpoint(source: str | Path) -> Path:
    """A checkpoint file, or the last.pt of a run folder."""
    source = Path(source)
    if source.is_dir():
        if not (source / "last.pt").is_file():
            raise RunError(f"run folder {str(source)!r} has no last.pt; run `popcli search --out {source}` first")
        return source / "last.pt"
    if not source.exists():
        raise RunError(f"{str(source)!r} not found; pass a run folder or a checkpoint (.pt) written by popcli search")
    return source


def _data_info(state: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    if "data_info" in state:
        return state["data_info"]
    if recipe.data.dataset == "synthetic":
        return {"shape": list(recipe.data.shape), "num_classes": recipe.data.num_classes}
    if recipe.data.dataset in STATIC_DATA:  # checkpoints written before they stored their input shape
        shape, classes = STATIC_DATA[recipe.data.dataset]
        return {"shape": shape, "num_classes": classes}
    raise RunError("this checkpoint does not record its input shape; re-run the search with this popcli version")


def model_from_checkpoint(path: Path) -> tuple[torch.nn.Module, Recipe, dict[str, Any], dict[str, Any]]:
    """(model in eval mode with the checkpoint's scores/weights, recipe, data info, metrics)."""
    state = load_checkpoint(path)
    try:
        recipe = from_dict(state["recipe"])
        info = _data_info(state, recipe)
        model = build_model(recipe.model, recipe.search, in_channels=info["shape"][0], image_size=input_size(info["shape"]),
                            num_classes=info["num_classes"], seed=recipe.seed)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise RunError(f"{path} does not match the model its recipe builds ({str(err).splitlines()[0][:160]})") from None
    metrics = dict(state.get("metrics") or {})
    metrics.setdefault("steps", state.get("progress", {}).get("global_step"))
    return model.eval(), recipe, info, metrics


def _write_artifact(ckpt: Path, out: Path, codec: str, force: bool) -> tuple[torch.nn.Module, Recipe, dict, dict]:
    """Rebuild the searched model from ``ckpt`` and write its artifact; (model, recipe, data info, report)."""
    model, recipe, info, metrics = model_from_checkpoint(ckpt)
    summary = ckpt.parent / "summary.json"
    if ckpt.name == "last.pt" and summary.is_file():  # the run's final figures, when they belong to last.pt
        try:
            metrics.update({k: v for k, v in json.loads(summary.read_text()).items()
                            if k in ("test_acc", "test_loss", "val_acc", "steps", "epochs", "wall_s")})
        except (OSError, json.JSONDecodeError):
            pass
    written = artifact.save(model, out, recipe=recipe, data_info=info, metrics=metrics, codec=codec, force=force,
                            checkpoint_bytes=ckpt.stat().st_size)
    return model, recipe, info, inspect(written)


def export(source: str | Path | None, out: str | Path | None = None, *, onnx: str | Path | None = None,
           prune_dead_units: bool = False, int8: bool = False, codec: str = "auto", force: bool = False,
           data_dir: str | None = None, parity_samples: int = 1000, masks: list[str] | None = None,
           inputs: torch.Tensor | None = None) -> dict[str, Any]:
    """Write the artifact (``out``) and/or a verified ONNX graph (``onnx``) of a run folder, a
    checkpoint, or (for ONNX) an artifact. The report: ``inspect(out)`` plus an "onnx" entry.
    ``masks`` (["NAME=RUN", ...], no ``source``): one artifact holding every run's mask (multimask).
    ``inputs``: images [N, C, H, W] for the ONNX parity check instead of the recipe's test set."""
    from .deploy import export_onnx, file_sha256

    if masks:
        from . import multimask

        if source is not None or onnx is not None or out is None:
            raise ArtifactError("--mask NAME=RUN builds one multi-mask artifact: pass -o FILE and no run or --onnx "
                                "(export ONNX per mask from single runs)")
        return inspect(multimask.write(masks, out, codec=codec, force=force))
    if source is None:
        raise ArtifactError("nothing to export: pass a run folder, a checkpoint or an artifact (or --mask NAME=RUN)")

    out, onnx = (Path(out) if out else None), (Path(onnx) if onnx else None)
    if out is None and onnx is None:
        raise UsageError("nothing to write: pass -o FILE.safetensors for the artifact and/or --onnx FILE.onnx")
    if onnx is None and (prune_dead_units or int8):
        raise UsageError("--prune-dead-units and --int8 shape the ONNX graph: add --onnx FILE.onnx")
    if codec != "auto" and codec not in codecs.CODECS:
        raise UsageError(f"unknown codec {codec!r}; choose auto or one of: {', '.join(codecs.CODECS)}")
    if parity_samples < 1:
        raise UsageError(f"--parity-samples {parity_samples}: expected a positive number of test images")
    for path, option in ((out, "-o"), (onnx, "--onnx")):  # before the slow part
        if path is not None:
            artifact.check_output(path, force, option)
    if onnx is not None and int8:
        from .deploy import int8_path

        artifact.check_output(int8_path(onnx), force, "--onnx")
    if out is not None and onnx is not None and os.path.realpath(out) == os.path.realpath(onnx):
        raise ArtifactError(f"-o and --onnx are the same file {str(out)!r}; give them different names")
    source = Path(source)
    if artifact.is_safetensors(source):
        if out is not None:
            raise UsageError(f"{source} is already an artifact: drop -o (or export from its run folder)")
        art = artifact.read(source)
        model, recipe, report = artifact.load(source, mode="search"), art.recipe, {"source": str(source)}
        info = model.popcli_description["data_info"]  # with the preprocessing the file records
        source_sha = art.metadata["content_sha256"]
    else:
        ckpt = find_checkpoint(source)
        if out is not None:
            model, recipe, info, report = _write_artifact(ckpt, out, codec, force)
            source_sha = report["content_sha256"]
        else:
            (model, recipe, info, _), report = model_from_checkpoint(ckpt), {"source": str(ckpt)}
            source_sha = file_sha256(ckpt)
    if onnx is not None:
        report["onnx"] = export_onnx(model, recipe, info, onnx, source=str(source), source_sha256=source_sha,
                                     prune=prune_dead_units, int8=int8, data_dir=data_dir, samples=parity_samples,
                                     force=force, inputs=inputs)
    return report


# --------------------------------------------------------------------------- inspect


def _dense_fp32_bytes(art: artifact.Artifact) -> int:
    """Size of the same model as a dense float32 safetensors file (masked weights stored as floats)."""
    entries = {r.name + ".weight": ("F32", list(r.shape), r.numel * 4) for r in art.layers}
    for key, value in art.tensors.items():
        if key.startswith(artifact.STATE):
            entries[key[len(artifact.STATE):]] = (value.dtype.str, list(value.shape), value.nbytes)
    offset, header = 0, {}
    for name, (dtype, shape, nbytes) in entries.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = len(json.dumps(header, separators=(",", ":")))
    return 8 + header_bytes + (-header_bytes % 8) + offset


def inspect(source: str | Path | artifact.Artifact, *, verify: bool = True) -> dict[str, Any]:
    """Metadata, per-layer table, sizes and ratios, and (``verify``) the problems found, of an
    artifact file (or of one already read)."""
    art = source if isinstance(source, artifact.Artifact) else artifact.read(source)
    layers = [{"name": r.name, "shape": list(r.shape), "weights": r.numel, "kept": r.kept, "density": r.kept / r.numel,
               "entropy_bits_per_weight": codecs.entropy_bits(r.kept, r.numel) / r.numel} for r in art.layers]
    masked = art.masked_weights
    mask_bytes = int(art.tensors[artifact.MASKS].nbytes) if artifact.MASKS in art.tensors else 0
    dense = _dense_fp32_bytes(art)
    ckpt = int(art.metadata["checkpoint_bytes"]) if "checkpoint_bytes" in art.metadata else None
    report = {
        "path": str(art.path), "format": f"{artifact.FORMAT_NAME} v{art.metadata['format_version']}",
        "content_sha256": art.metadata["content_sha256"],
        "generator": f"{art.metadata['generator']} v{art.metadata['generator_version']}",
        "seed": art.recipe.seed, "arch": art.recipe.model.arch, "init": art.recipe.model.init,
        "method": art.recipe.search.method, "density": art.recipe.search.density,
        "popcli_version": art.metadata.get("popcli_version"), "torch_version": art.metadata.get("torch_version"),
        "metrics": json.loads(art.metadata.get("metrics", "{}")), "data": art.data_info,
        "model_source": json.loads(art.metadata["model_source"]) if "model_source" in art.metadata else None,
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
    from . import multimask
    from .methods import store as method_store

    if method_store.SIGNS in art.tensors and masked:  # signed supermask: the sign stream and the ternary entropy
        state = json.loads(art.metadata.get(method_store.STATE_KEY, "{}"))
        inverted = sum(int(i) for i in state.get("inverted", []))
        kept = report["kept_weights"]
        report["sign_bytes"] = int(art.tensors[method_store.SIGNS].nbytes)
        report["ternary_entropy_bits_per_weight"] = (codecs.entropy_bits(kept, masked)
                                                     + codecs.entropy_bits(inverted, kept)) / masked if kept else 0.0
    if len(multimask.names(art)) > 1:  # a multi-mask file: the other masks, with their own bytes
        report["masks"] = multimask.sizes(art)
    if verify:
        report["problems"] = [p for name in multimask.names(art) for p in artifact.verify(multimask.select(art, name))]
        report["verified"] = not report["problems"]
    return report
