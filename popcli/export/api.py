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
from typing import Any, Callable

import torch

from .. import artifact
from ..errors import ArtifactError, Interrupted, UsageError
from ..storage.atomic import check_output
from .run import check_codec, find_checkpoint, model_from_checkpoint, write_artifact


ARTIFACT_SUFFIX, ONNX_SUFFIX = ".safetensors", ".onnx"


def output_paths(out: str | Path | None, onnx: str | Path | None) -> tuple[Path | None, Path | None]:
    """(artifact path, ONNX path) that ``-o`` and ``--onnx`` name: ``-o x.onnx`` writes the ONNX graph
    its suffix names, a name without a suffix gets the option's (``-o d03`` -> ``d03.safetensors``),
    any other suffix is refused (a UsageError naming the file to write instead)."""
    out, onnx = (Path(out) if out else None), (Path(onnx) if onnx else None)
    if out is not None and out.suffix.lower() == ONNX_SUFFIX:
        if onnx is not None:
            raise UsageError(f"-o {out} names an ONNX file and --onnx {onnx} another; -o is the artifact "
                             f"({ARTIFACT_SUFFIX}): give -o NAME{ARTIFACT_SUFFIX} --onnx {onnx}")
        out, onnx = None, out
    return _suffixed(out, "-o", ARTIFACT_SUFFIX), _suffixed(onnx, "--onnx", ONNX_SUFFIX)


def _suffixed(path: Path | None, option: str, suffix: str) -> Path | None:
    if path is None or path.suffix.lower() == suffix or _is_dir(path):  # a folder: check_output says so
        return path
    if not path.suffix:
        return path.with_name(path.name + suffix)
    raise UsageError(f"{option} {path}: popcli writes a {suffix} file there, not {path.suffix}; name it "
                     f"{path.with_suffix(suffix)}")


def _stopper(should_stop: Callable[[], bool]) -> Callable[[list, list], None]:
    """``stop(written, left)``: Interrupted naming what was written and what was not, if a stop was asked."""

    def stop(written: list[Path | None], left: list[Path | None]) -> None:
        if not should_stop():
            return
        done = [str(p) for p in written if p is not None]
        todo = [str(p) for p in left if p is not None]
        so_far = f"{', '.join(done)} written (complete and verified); " if done else "nothing written; "
        raise Interrupted(f"stopped: {so_far}not written: {', '.join(todo)}")

    return stop


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long, a symlink loop: check_output names it
        return False


def export(source: str | Path | None, out: str | Path | None = None, *, onnx: str | Path | None = None,
           prune_dead_units: bool = False, int8: bool = False, codec: str = "auto", force: bool = False,
           data_dir: str | None = None, parity_samples: int = 1000, masks: list[str] | None = None,
           inputs: torch.Tensor | None = None, trust_code: bool = False, compact: bool = False,
           should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Write the artifact (``out``) and/or a verified ONNX graph (``onnx``) of a run folder, a
    checkpoint, or (for ONNX) an artifact. The report: ``inspect(out)`` plus an "onnx" entry.
    ``masks`` (["NAME=RUN", ...], no ``source``): one artifact holding every run's mask (multimask).
    ``inputs``: images [N, C, H, W] for the ONNX parity check instead of the recipe's test set.
    ``compact``: the ONNX file stores packable weights as keep and sign bits (``deploy.compact``).
    ``trust_code``: build a model whose builder the run or artifact names even when it is not
    popcli's own or an installed entry point (``models.trust``).
    ``should_stop()`` (a Ctrl-C) is asked between the steps, never inside a write: true before a
    file is written raises ``Interrupted`` saying which were written (complete) and which not; a
    stop asked after the last write changes nothing (the work is done)."""
    from ..storage.atomic import file_sha256
    from ..deploy.onnx_file import export_onnx  # onnx, onnxruntime: only when asked

    if masks:
        from .bundle import write as write_bundle

        if source is not None or onnx is not None or out is None:
            raise ArtifactError("--mask NAME=RUN builds one multi-mask artifact: pass -o FILE and no run or --onnx "
                                "(export ONNX per mask from single runs)")
        out, onnx = output_paths(out, None)
        if out is None:
            raise UsageError(f"--mask NAME=RUN writes one artifact: -o NAME{ARTIFACT_SUFFIX}, not an ONNX file")
        return artifact.inspect(write_bundle(masks, out, codec=codec, force=force, trust_code=trust_code),
                                trust_code=True)  # the runs' builder was built (trusted) to write it
    if source is None:
        raise ArtifactError("nothing to export: pass a run folder, a checkpoint or an artifact (or --mask NAME=RUN)")

    out, onnx = output_paths(out, onnx)
    if out is None and onnx is None:
        raise UsageError("nothing to write: pass -o FILE.safetensors for the artifact and/or --onnx FILE.onnx")
    if onnx is None and (prune_dead_units or int8 or compact):
        raise UsageError("--prune-dead-units, --int8 and --compact shape the ONNX graph: add --onnx FILE.onnx")
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
    stop = _stopper(should_stop or (lambda: False))
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
            stop([], [out, onnx])
            model, recipe, info, report = write_artifact(ckpt, out, codec, force, trust_code)
            source_sha = report["content_sha256"]
        else:
            (model, recipe, info, _), report = model_from_checkpoint(ckpt, trust_code), {"source": str(ckpt)}
            source_sha = file_sha256(ckpt)
    if onnx is not None:
        stop([out], [onnx])
        report["onnx"] = export_onnx(model, recipe, info, onnx, source=str(source), source_sha256=source_sha,
                                     prune=prune_dead_units, int8=int8, data_dir=data_dir, samples=parity_samples,
                                     force=force, inputs=inputs, compact=compact)
    return report
