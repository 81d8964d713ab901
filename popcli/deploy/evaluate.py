"""``popcli eval``: accuracy and latency of a subnetwork, in PyTorch and ONNX Runtime.

``evaluate(source, ...)`` takes an artifact (.safetensors) or a popcli ONNX file and reports
test accuracy (PyTorch and ONNX Runtime) and, per batch size, latency (p50/p90/p99 ms, images/s)
of: PyTorch eager (the subnet model as loaded, and baked: masks applied, BN folded), ONNX
Runtime fp32 (and int8 with ``int8=True``), and the same architecture *unmasked* as the dense
reference. Every figure carries its engine, batch size, threads and provider; the machine is
recorded once. Unstructured sparsity does not make dense kernels faster: the masked and the
dense rows show it, the ONNX Runtime / int8 / dead-unit rows show what does help. The counting
and timing are ``popcli.measure``'s, the images ``data.sample``'s (both serve the search and the
ONNX export's checks too). Progress goes through ``on_event``; nothing prints.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .. import artifact
from ..artifact.tasks import AUTO
from ..data.sample import real_inputs
from ..errors import EXIT_USAGE, PopcliError
from ..measure import accuracies, latency, machine
from ..nn import SubnetMixin
from ..recipe import Recipe, from_dict
from . import graph
from .bake import bake
from .int8 import CALIBRATION_IMAGES, quantize_int8
from .task_eval import evaluate_tasks

EventHandler = Callable[[str, dict[str, Any]], None]
NOTE = ("Unstructured sparsity does not make dense kernels faster: the masked model costs what the dense one does. "
        "What helps: ONNX Runtime (less framework overhead), int8, and removing dead units (--prune-dead-units).")


class EvalError(PopcliError):
    """A source or dataset popcli eval cannot use (exit 1)."""


class EvalOptionError(EvalError):
    """An option popcli eval cannot use (exit 2, a usage error)."""

    exit_code = EXIT_USAGE


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise EvalOptionError(f"--batch-sizes {text!r}: expected positive integers separated by commas, e.g. 1,64")
    return sizes


def _unmasked(model: torch.nn.Module) -> torch.nn.Module:
    """The same architecture keeping every weight: the dense reference for latency."""
    dense = copy.deepcopy(model)
    for module in dense.modules():
        if isinstance(module, SubnetMixin):
            module.fix_mask(torch.ones_like(module.weight, dtype=torch.bool))
    return dense.eval()


# --------------------------------------------------------------------------- sources


@dataclass
class _Source:
    kind: str  # "artifact" or "onnx"
    recipe: Recipe
    shape: tuple[int, int, int]  # model input [C, H, W]
    search_acc: float | None  # what the search reported, when the file records it
    model: torch.nn.Module | None = None  # artifacts: the loaded subnetwork
    sha256: str = ""
    onnx_path: Path | None = None
    int8: bool = False  # an ONNX file written by --int8


def _open(path: Path, mask: str | None = None, trust_code: bool = False) -> _Source:
    if not path.is_file():
        raise EvalError(f"{str(path)!r} not found; pass an artifact (.safetensors) or an ONNX file from popcli export")
    if artifact.is_safetensors(path):
        art = artifact.select(artifact.read(path), mask)  # one named mask of a multi-mask file (None: its first)
        return _Source("artifact", art.recipe, tuple(int(d) for d in art.data_info["shape"]),
                       art.header.metrics.get("test_acc"),
                       artifact.load(path, mask=mask, mode="search", trust_code=trust_code),
                       art.header.content_sha256)
    if mask is not None:
        raise EvalError(f"--mask {mask!r} selects a mask of a multi-mask artifact; {path} is not an artifact")
    from ..storage.sniff import foreign_kind, not_an_artifact

    if foreign_kind(path) not in (None, "onnx"):  # a checkpoint or another torch file: say which
        raise EvalError(f"{not_an_artifact(path)}; popcli eval takes an artifact or an ONNX file")
    try:
        meta = graph.metadata_of(path)
    except Exception as err:  # onnx raises DecodeError and others for files that are not ONNX
        raise EvalError(f"{path}: neither an artifact nor an ONNX file ({err.__class__.__name__}); pass a file "
                        f"written by popcli export") from None
    if "popcli.recipe" not in meta or "popcli.data" not in meta:
        raise EvalError(f"{path}: an ONNX file without popcli's metadata (popcli.recipe, popcli.data); popcli eval "
                        f"needs files written by `popcli export --onnx`")
    return _Source("onnx", from_dict(json.loads(meta["popcli.recipe"])), tuple(json.loads(meta["popcli.data"])["shape"]),
                   None, onnx_path=path, int8="popcli.int8" in meta)


def _engines(src: _Source, calibration: torch.Tensor | None) -> dict[str, Any]:
    """{row name: torch module or ONNX model/path} to measure."""
    if src.kind == "onnx":
        return {"onnxruntime int8" if src.int8 else "onnxruntime fp32": src.onnx_path}
    baked, dense = bake(src.model), bake(_unmasked(src.model))
    meta = {"popcli.source_sha256": src.sha256}
    proto = graph.to_onnx(baked, src.shape, meta)
    engines = {"pytorch eager, subnet layers": src.model, "pytorch eager, baked": baked, "onnxruntime fp32": proto,
               "pytorch eager, dense (unmasked)": dense,
               "onnxruntime fp32, dense (unmasked)": graph.to_onnx(dense, src.shape, meta)}
    if calibration is not None:
        engines["onnxruntime int8"] = quantize_int8(proto, calibration.split(64))
    return engines


# --------------------------------------------------------------------------- evaluate


def _predictor(engine, provider: str, threads: int) -> tuple[Callable, str]:
    if isinstance(engine, torch.nn.Module):
        def predict(x):
            with torch.no_grad():
                return engine(x)
        return predict, "pytorch"
    sess = graph.session(engine, threads, provider)
    return (lambda x: graph.run(sess, x)), provider


def _check_options(sizes: str, limit: int | None, provider: str) -> list[int]:
    import onnxruntime

    if limit is not None and limit < 1:
        raise EvalOptionError(f"--limit {limit}: expected a positive number of test images")
    if provider not in onnxruntime.get_available_providers():
        raise EvalOptionError(f"execution provider {provider!r} is not available; this onnxruntime has: "
                        f"{', '.join(onnxruntime.get_available_providers())}")
    return _batch_sizes(sizes)


def evaluate(source: str | Path, *, dataset: str | None = None, data_dir: str | None = None, limit: int | None = None,
             batch_sizes: str = "1,64", threads: int | None = None, provider: str = "CPUExecutionProvider",
             int8: bool = False, on_event: EventHandler | None = None, mask: str | None = None,
             trust_code: bool = False) -> dict[str, Any]:
    """Accuracy and latency report of an artifact or popcli ONNX file (see the module docstring);
    ``mask``: one named mask of a multi-mask artifact (its own recipe, so its own data), or
    ``"auto"``: task inference over all masks at each batch size (``task_eval``); ``trust_code``:
    build an artifact whose builder is not popcli's own or an installed entry point (``models.trust``)."""
    on_event = on_event or (lambda kind, info: None)
    sizes = _check_options(batch_sizes, limit, provider)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if mask == AUTO:  # which task each batch is: SupSup's one-shot inference, at every --batch-sizes size
        if int8 or dataset:
            raise EvalOptionError("--mask auto evaluates every mask on its own task's data; drop --int8 and --dataset")
        if not (Path(source).is_file() and artifact.is_safetensors(Path(source))):
            raise EvalError(f"--mask auto infers tasks over the masks of a multi-mask artifact; {source} is not one")
        return evaluate_tasks(source, batch_sizes=sizes, limit=limit, data_dir=data_dir, threads=threads,
                              on_event=on_event, trust_code=trust_code)
    src = _open(Path(source), mask, trust_code)
    if int8 and src.kind != "artifact":
        raise EvalOptionError("--int8 quantizes an artifact; to measure an int8 ONNX file, pass the .int8.onnx file itself")
    if dataset:
        src.recipe.data.dataset = dataset
    x, y, calibration = real_inputs(src.recipe, data_dir, test=limit or 10**9, train=CALIBRATION_IMAGES if int8 else 0)
    if tuple(x.shape[1:]) != src.shape:
        raise EvalOptionError(f"{source}: the model takes inputs {list(src.shape)} but {src.recipe.data.dataset} images are "
                        f"{list(x.shape[1:])}; evaluate it on the dataset it was searched on")
    report: dict[str, Any] = {"source": str(source), "kind": src.kind, "dataset": src.recipe.data.dataset,
                              "test_images": len(y), "search_acc": src.search_acc, "threads": threads,
                              "provider": provider, "machine": machine(), "accuracy": {}, "latency": [], "note": NOTE}
    for name, engine in _engines(src, calibration if int8 else None).items():
        predict, runtime = _predictor(engine, provider, threads)
        if "dense (unmasked)" not in name and "baked" not in name:  # accuracy of the model itself, per runtime
            on_event("accuracy", {"engine": name, "images": len(y)})
            report["accuracy"][name], top5 = accuracies(predict, x, y)
            if top5 is not None:  # more than 5 classes: top-5 too, as torchvision's references report
                report.setdefault("top5", {})[name] = top5
        for size in sizes:
            batch = x[:size] if len(x) >= size else x.repeat(-(-size // len(x)), 1, 1, 1)[:size]
            on_event("latency", {"engine": name, "batch_size": size})
            report["latency"].append({"engine": name, "batch_size": size, "threads": threads, "runtime": runtime,
                                      **latency(lambda: predict(batch), size)})
    return report


def speedup(report: dict[str, Any], engine: str, baseline: str, batch_size: int) -> float | None:
    """p50 latency of ``engine`` over ``baseline`` at ``batch_size`` (None if either is missing)."""
    rows = {(r["engine"], r["batch_size"]): r["p50_ms"] for r in report["latency"]}
    if (engine, batch_size) not in rows or (baseline, batch_size) not in rows:
        return None
    return rows[(engine, batch_size)] / rows[(baseline, batch_size)]


__all__ = ["EvalError", "EvalOptionError", "NOTE", "evaluate", "speedup"]
