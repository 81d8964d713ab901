"""``popcli export``: a search run -> an artifact and/or a verified ONNX graph, or several runs'
masks -> one multi-mask artifact.

``export(source, out, onnx=...)`` rebuilds the searched model from a run folder (its last.pt) or
a checkpoint, writes the artifact (``artifact.save``) and verifies the written file; with
``onnx`` it also writes a verified ONNX graph (``deploy.onnx_file.export_onnx``), from a run or
from an artifact alone; with ``masks`` it bundles several runs (``bundle``). Every output path is
checked before the slow part. The report is the artifact's ``inspect`` plus an ``onnx`` entry.
Nothing here prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .. import artifact
from ..errors import ArtifactError, UsageError
from ..storage.atomic import check_output
from .run import check_codec, find_checkpoint, model_from_checkpoint, write_artifact


def export(source: str | Path | None, out: str | Path | None = None, *, onnx: str | Path | None = None,
           prune_dead_units: bool = False, int8: bool = False, codec: str = "auto", force: bool = False,
           data_dir: str | None = None, parity_samples: int = 1000, masks: list[str] | None = None,
           inputs: torch.Tensor | None = None, trust_code: bool = False) -> dict[str, Any]:
    """Write the artifact (``out``) and/or a verified ONNX graph (``onnx``) of a run folder, a
    checkpoint, or (for ONNX) an artifact. The report: ``inspect(out)`` plus an "onnx" entry.
    ``masks`` (["NAME=RUN", ...], no ``source``): one artifact holding every run's mask (multimask).
    ``inputs``: images [N, C, H, W] for the ONNX parity check instead of the recipe's test set.
    ``trust_code``: build a model whose builder the run or artifact names even when it is not
    popcli's own or an installed entry point (``models.trust``)."""
    from ..deploy.onnx_file import export_onnx, file_sha256  # onnx, onnxruntime: only when asked

    if masks:
        from .bundle import write as write_bundle

        if source is not None or onnx is not None or out is None:
            raise ArtifactError("--mask NAME=RUN builds one multi-mask artifact: pass -o FILE and no run or --onnx "
                                "(export ONNX per mask from single runs)")
        return artifact.inspect(write_bundle(masks, out, codec=codec, force=force, trust_code=trust_code),
                                trust_code=True)  # the runs' builder was built (trusted) to write it
    if source is None:
        raise ArtifactError("nothing to export: pass a run folder, a checkpoint or an artifact (or --mask NAME=RUN)")

    out, onnx = (Path(out) if out else None), (Path(onnx) if onnx else None)
    if out is None and onnx is None:
        raise UsageError("nothing to write: pass -o FILE.safetensors for the artifact and/or --onnx FILE.onnx")
    if onnx is None and (prune_dead_units or int8):
        raise UsageError("--prune-dead-units and --int8 shape the ONNX graph: add --onnx FILE.onnx")
    check_codec(codec)
    if parity_samples < 1:
        raise UsageError(f"--parity-samples {parity_samples}: expected a positive number of test images")
    for path, option in ((out, "-o"), (onnx, "--onnx")):  # before the slow part
        if path is not None:
            check_output(path, force, option)
    if onnx is not None and int8:
        from ..deploy.int8 import int8_path

        check_output(int8_path(onnx), force, "--onnx")
    if out is not None and onnx is not None and os.path.realpath(out) == os.path.realpath(onnx):
        raise ArtifactError(f"-o and --onnx are the same file {str(out)!r}; give them different names")
    source = Path(source)
    if artifact.is_safetensors(source):
        if out is not None:
            raise UsageError(f"{source} is already an artifact: drop -o (or export from its run folder)")
        art = artifact.read(source)
        model = artifact.load(source, mode="search", trust_code=trust_code)
        recipe, report = art.recipe, {"source": str(source)}
        info = model.popcli_description["data_info"]  # with the preprocessing the file records
        source_sha = art.header.content_sha256
    else:
        ckpt = find_checkpoint(source)
        if out is not None:
            model, recipe, info, report = write_artifact(ckpt, out, codec, force, trust_code)
            source_sha = report["content_sha256"]
        else:
            (model, recipe, info, _), report = model_from_checkpoint(ckpt, trust_code), {"source": str(ckpt)}
            source_sha = file_sha256(ckpt)
    if onnx is not None:
        report["onnx"] = export_onnx(model, recipe, info, onnx, source=str(source), source_sha256=source_sha,
                                     prune=prune_dead_units, int8=int8, data_dir=data_dir, samples=parity_samples,
                                     force=force, inputs=inputs)
    return report
