"""``popcli eval``: accuracy and latency of a subnetwork, in PyTorch and ONNX Runtime.

``evaluate(source, ...)`` takes an artifact (.safetensors) or a popcli ONNX file and reports
test accuracy (PyTorch and ONNX Runtime) and, per batch size, latency (p50/p90/p99 ms, images/s)
of: PyTorch eager (the subnet model as loaded, and baked: masks applied, BN folded), ONNX
Runtime fp32 (and int8 with ``int8=True``), and the same architecture *unmasked* as the dense
reference; a signed-constant model also runs from its keep and sign bits (``torch_packed``:
``load(mode="packed")``) and as the compact ONNX file (``ort_compact``: ``export --compact``), and
each ONNX Runtime row carries its session start time. Every row is keyed by a stable engine id (``ENGINES``: ``torch_subnet``,
``ort_fp32``, ...) and carries its runtime, device and threads; the machine is recorded once.
Unstructured sparsity does not make dense kernels faster: the masked and the dense rows show
it, the ONNX Runtime / int8 / dead-unit rows show what does help.

The images: the recipe's test set (``data.sample``; ``dataset=`` another of the same shape), the
user's own (``inputs=`` a folder or .npy, ``labels=``: ``data.files``), or, with
``latency_only=True``, inputs generated at the recorded shape (no accuracy); ``mask="auto"``
reports SupSup's task inference over a multi-mask file instead (``task_eval``). A model that has no
test set by name (searched on the user's own ``Dataset``, or saved by ``popcli.save`` without
one) is never measured on stand-in data: it needs ``inputs=`` or ``latency_only``. int8 is
calibrated on the same source's images (training images of a dataset). The counting and timing
are ``popcli.measure``'s. Progress goes through ``on_event``; nothing prints.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .. import artifact
from ..artifact import preprocess
from ..artifact.tasks import AUTO
from ..data.files import read_inputs, read_labels
from ..data.sample import real_inputs
from ..errors import EXIT_USAGE, PopcliError
from ..measure import accuracies, keeps_torch_threads, latency, machine
from ..nn import SubnetMixin
from ..recipe import Recipe, from_dict
from ..rng import torch_generator
from . import graph
from ..nn.packed import pack_model
from .bake import bake
from .compact import compact
from .int8 import CALIBRATION_IMAGES, quantize_int8
from .task_eval import evaluate_tasks

EventHandler = Callable[[str, dict[str, Any]], None]
NOTE = ("Unstructured sparsity does not make dense kernels faster: the masked model costs what the dense one does. "
        "What helps: ONNX Runtime (less framework overhead), int8, removing dead units (--prune-dead-units), and for "
        "signed-constant weights the packed bits at small batches (less memory traffic).")
# engine id -> what the tables call it; ids are stable (scripts read them), labels may change
ENGINES = {"torch_subnet": "pytorch eager, subnet layers", "torch_baked": "pytorch eager, baked",
           "ort_fp32": "onnxruntime fp32", "torch_dense": "pytorch eager, dense (unmasked)",
           "ort_fp32_dense": "onnxruntime fp32, dense (unmasked)", "ort_int8": "onnxruntime int8",
           "torch_packed": "pytorch, packed bits (C kernels)", "ort_compact": "onnxruntime, compact file (bits)"}
REFERENCE_ONLY = ("torch_baked", "torch_dense", "ort_fp32_dense")  # latency rows only: same accuracy as another
GENERATED_BATCHES = 4  # latency_only: generated inputs = 4 x the largest batch (int8 calibration too)


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
    compact: bool = False  # an ONNX file written by --compact
    config: dict[str, Any] | None = None  # its preprocessing (docs/FORMAT.md): how --inputs are prepared

    @property
    def named_test_set(self) -> bool:
        """Whether the recipe names data popcli can load: not the user's own Dataset, nor the
        stand-in synthetic data of a model saved without a dataset (preprocessing dataset null)."""
        data = self.recipe.data
        return data.dataset != "user" and not (data.dataset == "synthetic" and (self.config or {}).get("dataset") is None)


def _open(path: Path, mask: str | None = None, trust_code: bool = False) -> _Source:
    if not path.is_file():
        raise EvalError(f"{str(path)!r} not found; pass an artifact (.safetensors) or an ONNX file from popcli export")
    if artifact.is_safetensors(path):
        art = artifact.select(artifact.read(path), mask)  # one named mask of a multi-mask file (None: its first)
        return _Source("artifact", art.recipe, tuple(int(d) for d in art.data_info["shape"]),
                       art.header.metrics.get("test_acc"),
                       artifact.load(path, mask=mask, mode="search", trust_code=trust_code),
                       art.header.content_sha256, config=preprocess.from_artifact(art))
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
    recipe, data = from_dict(json.loads(meta["popcli.recipe"])), json.loads(meta["popcli.data"])
    config = json.loads(meta["popcli.preprocessing"]) if "popcli.preprocessing" in meta else None
    return _Source("onnx", recipe, tuple(data["shape"]), None, onnx_path=path, int8="popcli.int8" in meta,
                   compact="popcli.compact" in meta,
                   config=config or {"input_shape": data["shape"], "num_classes": data["num_classes"],
                                     "dataset": data.get("dataset", recipe.data.dataset)})


def _engines(src: _Source, calibration: torch.Tensor | None) -> dict[str, Any]:
    """{engine id: torch module or ONNX model/path} to measure."""
    if src.kind == "onnx":
        return {"ort_int8" if src.int8 else "ort_compact" if src.compact else "ort_fp32": src.onnx_path}
    baked, dense = bake(src.model), bake(_unmasked(src.model))
    meta = {"popcli.source_sha256": src.sha256}
    proto = graph.to_onnx(baked, src.shape, meta)
    engines = {"torch_subnet": src.model, "torch_baked": baked, "ort_fp32": proto, "torch_dense": dense,
               "ort_fp32_dense": graph.to_onnx(dense, src.shape, meta)}
    packed, packed_layers = pack_model(copy.deepcopy(baked))
    if packed_layers:  # the signed-constant family: also run from its bits, and as the compact file
        engines["torch_packed"] = packed
        engines["ort_compact"] = compact(proto)[0]
    if calibration is not None:
        engines["ort_int8"] = quantize_int8(proto, calibration.split(64))
    return engines


# --------------------------------------------------------------------------- evaluate


def _predictor(engine, provider: str, threads: int) -> tuple[Callable, str, str, float | None]:
    """(batch -> logits, runtime, device, ONNX Runtime session start in ms or None) of one engine."""
    if isinstance(engine, torch.nn.Module):
        def predict(x):
            with torch.no_grad():
                return engine(x)
        return predict, "pytorch", "cpu", None
    start = time.perf_counter()
    sess = graph.session(engine, threads, provider)
    start_ms = (time.perf_counter() - start) * 1e3  # graph optimizations, the compact file's unpacking included
    device = "cpu" if provider == "CPUExecutionProvider" else provider.removesuffix("ExecutionProvider").lower()
    return (lambda x: graph.run(sess, x)), "onnxruntime", device, start_ms


def _check_options(sizes: str, limit: int | None, provider: str, inputs, labels, dataset, latency_only: bool) -> list[int]:
    import onnxruntime

    if limit is not None and limit < 1:
        raise EvalOptionError(f"--limit {limit}: expected a positive number of test images")
    if provider not in onnxruntime.get_available_providers():
        raise EvalOptionError(f"execution provider {provider!r} is not available; this onnxruntime has: "
                              f"{', '.join(onnxruntime.get_available_providers())}")
    if labels is not None and inputs is None:
        raise EvalOptionError("--labels go with --inputs: the labels of those inputs, in their order")
    if latency_only and (inputs is not None or dataset):
        raise EvalOptionError("--latency-only times generated inputs; drop --inputs/--dataset (or --latency-only)")
    if inputs is not None and dataset:
        raise EvalOptionError("--inputs and --dataset both name the images; give one")
    return _batch_sizes(sizes)


@dataclass
class _Images:
    """What a report measures on: inputs [N, C, H, W], labels [N] (None: latency only), int8
    calibration images, and where they came from."""

    x: torch.Tensor
    y: torch.Tensor | None
    calibration: torch.Tensor | None
    origin: str  # "dataset" | "files" | "generated"


def _images(src: _Source, source: str, *, dataset: str | None, data_dir: str | None, limit: int | None, int8: bool,
            inputs: str | Path | None, labels: str | Path | None, latency_only: bool, largest: int) -> _Images:
    """The images of one evaluation (see the module docstring); EvalError when there are none to use."""
    if latency_only:  # random inputs of the recorded shape: what latency needs, nothing accuracy could use
        x = torch.randn(GENERATED_BATCHES * largest, *src.shape, generator=torch_generator(0, "eval", "generated"))
        return _Images(x, None, x if int8 else None, "generated")
    if inputs is not None:
        config = {**(src.config or {}), "input_shape": list(src.shape)}
        x, y = read_inputs(inputs, config)
        if labels is not None:
            y = read_labels(labels, len(x), config.get("class_names"), int(config.get("num_classes") or 10**9))
        x, y = (x[:limit], None if y is None else y[:limit]) if limit else (x, y)
        return _Images(x, y, x[:CALIBRATION_IMAGES] if int8 else None, "files")
    if dataset:
        src.recipe.data.dataset = dataset
    elif not src.named_test_set:
        why = ("was searched on your own Dataset" if src.recipe.data.dataset == "user" else
               "was saved without a dataset (popcli.save of a model built in Python)")
        raise EvalError(f"{source} {why}: popcli has no test images for it; pass --inputs DIR_OR_NPY (with --labels "
                        f"FILE for accuracy), --dataset NAME, or --latency-only")
    x, y, train = real_inputs(src.recipe, data_dir, test=limit or 10**9, train=CALIBRATION_IMAGES if int8 else 0)
    if tuple(x.shape[1:]) != src.shape:
        raise EvalOptionError(f"the model takes inputs {list(src.shape)} but {src.recipe.data.dataset} images are "
                              f"{list(x.shape[1:])}; evaluate it on the dataset it was searched on")
    return _Images(x, y, train if int8 else None, "dataset")


def _measure(report: dict[str, Any], engines: dict[str, Any], images: _Images, sizes: list[int], provider: str,
             threads: int, on_event: EventHandler) -> None:
    """Fill ``report``'s accuracy and latency rows, engine by engine."""
    x, y = images.x, images.y
    for engine_id, engine in engines.items():
        predict, runtime, device, start_ms = _predictor(engine, provider, threads)
        where = {"engine": engine_id, "label": ENGINES[engine_id], "runtime": runtime, "device": device,
                 "threads": threads, "session_start_ms": start_ms}
        if y is not None and engine_id not in REFERENCE_ONLY:  # accuracy of the model itself, per runtime
            on_event("accuracy", {"engine": engine_id, "label": ENGINES[engine_id], "images": len(y)})
            top1, top5 = accuracies(predict, x, y)  # top-5 only for more than 5 classes (measure)
            report["accuracy"].append({**where, "top1": top1, "top5": top5})
        for size in sizes:
            batch = x[:size] if len(x) >= size else x.repeat(-(-size // len(x)), 1, 1, 1)[:size]
            on_event("latency", {"engine": engine_id, "label": ENGINES[engine_id], "batch_size": size})
            report["latency"].append({**where, "batch_size": size, **latency(lambda: predict(batch), size)})


@keeps_torch_threads
def evaluate(source: str | Path, *, dataset: str | None = None, data_dir: str | None = None, limit: int | None = None,
             batch_sizes: str = "1,64", threads: int | None = None, provider: str = "CPUExecutionProvider",
             int8: bool = False, on_event: EventHandler | None = None, mask: str | None = None,
             inputs: str | Path | None = None, labels: str | Path | None = None,
             latency_only: bool = False, trust_code: bool = False) -> dict[str, Any]:
    """Accuracy and latency report of an artifact or popcli ONNX file (see the module docstring);
    ``mask``: one named mask of a multi-mask artifact (its own recipe, so its own data), or
    ``"auto"``: task inference over all masks at each batch size (``task_eval``);
    ``inputs``/``labels``: the user's images; ``latency_only``: generated inputs, no accuracy;
    ``trust_code``: build an artifact whose builder is not popcli's own or an installed entry
    point (``models.trust``)."""
    on_event = on_event or (lambda kind, info: None)
    sizes = _check_options(batch_sizes, limit, provider, inputs, labels, dataset, latency_only)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if mask == AUTO:  # which task each batch is: SupSup's one-shot inference, at every --batch-sizes size
        if int8 or dataset or inputs is not None or latency_only:
            raise EvalOptionError("--mask auto evaluates every mask on its own task's data; drop --int8, --dataset, "
                                  "--inputs and --latency-only")
        if not (Path(source).is_file() and artifact.is_safetensors(Path(source))):
            raise EvalError(f"--mask auto infers tasks over the masks of a multi-mask artifact; {source} is not one")
        return evaluate_tasks(source, batch_sizes=sizes, limit=limit, data_dir=data_dir, threads=threads,
                              on_event=on_event, trust_code=trust_code)
    src = _open(Path(source), mask, trust_code)
    if int8 and src.kind != "artifact":
        raise EvalOptionError("--int8 quantizes an artifact; to measure an int8 ONNX file, pass the .int8.onnx file itself")
    images = _images(src, str(source), dataset=dataset, data_dir=data_dir, limit=limit, int8=int8, inputs=inputs, labels=labels,
                     latency_only=latency_only, largest=max(sizes))
    report: dict[str, Any] = {
        "source": str(source), "kind": src.kind, "inputs": images.origin,
        "dataset": src.recipe.data.dataset if images.origin == "dataset" else None,
        "input_shape": list(src.shape), "test_images": len(images.y) if images.y is not None else 0,
        "search_acc": src.search_acc, "threads": threads, "provider": provider, "machine": machine(),
        "accuracy": [], "latency": [], "note": NOTE}
    if int8:
        report["int8_calibration"] = {"dataset": "training images", "files": "the --inputs images",
                                      "generated": "generated inputs (latency is meaningful, accuracy is not)"
                                      }[images.origin]
    _measure(report, _engines(src, images.calibration), images, sizes, provider, threads, on_event)
    return report


def speedup(report: dict[str, Any], engine: str, baseline: str, batch_size: int) -> float | None:
    """p50 latency of ``engine`` over ``baseline`` at ``batch_size`` (None if either is missing)."""
    rows = {(r["engine"], r["batch_size"]): r["p50_ms"] for r in report["latency"]}
    if (engine, batch_size) not in rows or (baseline, batch_size) not in rows:
        return None
    return rows[(engine, batch_size)] / rows[(baseline, batch_size)]


__all__ = ["ENGINES", "EvalError", "EvalOptionError", "NOTE", "evaluate", "speedup"]
