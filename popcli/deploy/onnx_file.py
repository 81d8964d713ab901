"""From a found subnetwork to deployable ONNX files: bake, (prune), export, verify, (quantize).

``export_onnx(model, recipe, data_info, path, ...)`` bakes the model (``bake``), optionally
removes dead units, exports it (``graph``), checks ONNX Runtime against the *original*
PyTorch model on real test images (an error, and no file, beyond ``PARITY_ATOL``), writes it,
and with ``int8`` also writes ``<name>.int8.onnx`` (static QDQ, calibrated on training images)
with its accuracy and speed against fp32 (``int8.report``). Nothing prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..artifact import preprocess
from ..data.sample import real_inputs
from ..errors import UsageError
from ..recipe import Recipe
from ..storage.atomic import check_output
from ..storage.strict_json import compact
from ..version import __version__
from . import graph, int8 as quantized
from .compact import compact as compact_graph
from .bake import bake, count, prune_dead_units
from .int8 import CALIBRATION_IMAGES, int8_path


def _metadata(recipe: Recipe, data_info: dict[str, Any], source: str, source_sha256: str, pruned: bool) -> dict[str, str]:
    return {
        "popcli.version": __version__, "popcli.seed": str(recipe.seed), "popcli.arch": recipe.model.arch,
        "popcli.init": recipe.model.init, "popcli.method": recipe.search.method,
        "popcli.density": repr(recipe.search.density), "popcli.source": source,
        "popcli.source_sha256": source_sha256, "popcli.dead_units_removed": str(pruned).lower(),
        "popcli.data": compact({**data_info, "dataset": recipe.data.dataset}),
        "popcli.recipe": compact(recipe.to_dict()),
        **preprocess.onnx_metadata(preprocess.data_config(recipe, data_info)),
    }


def _compacted(proto, recipe: Recipe):
    """(the compact graph, its report) of an fp32 graph; a usage error when no weight packs."""
    compacted, info = compact_graph(proto)
    if not info["packed"]:
        raise UsageError(f"--compact stores each weight as a keep and a sign bit, which needs the kept weights of "
                         f"every row to be +-one value (signed_constant, scaled_signed_constant, biprop, signed-"
                         f"supermask); this model has init {recipe.model.init!r} and method "
                         f"{recipe.search.method!r}: export without --compact")
    return compacted, {"packed_weights": info["packed"], "weight_tensors": info["weights"]}


def export_onnx(model: torch.nn.Module, recipe: Recipe, data_info: dict[str, Any], path: str | Path, *,
                source: str, source_sha256: str, prune: bool = False, int8: bool = False,
                data_dir: str | None = None, samples: int = 1000, force: bool = False,
                inputs: torch.Tensor | None = None, compact: bool = False) -> dict[str, Any]:
    """Bake, export, verify and write ``model`` as ONNX (see the module docstring); the report.
    ``inputs`` [N, C, H, W]: the images to check parity on instead of the recipe's test set (a
    user's own data, ``data.dataset: user``); with ``int8`` they calibrate it too (no labels: the
    int8 report gives its top-1 agreement with fp32 instead of accuracies). ``compact``: write the
    graph with its weights as keep and sign bits (``deploy.compact``; the int8 file is made from the
    fp32 graph as usual), refused for a model with no such weight."""
    path = Path(path)
    check_output(path, force, "--onnx")
    if int8:
        check_output(int8_path(path), force, "--onnx")
    shape = tuple(int(d) for d in data_info["shape"])
    dataset = data_info["dataset"] if "dataset" in data_info else recipe.data.dataset
    if int8 and inputs is None and dataset is None:  # saved without a dataset: its "data" would be stand-in noise
        raise UsageError("--int8 calibrates on the training images of the model's dataset, and this model was saved "
                         "without one; calibrate on your own images: popcli.export.export(artifact, onnx=path, "
                         "int8=True, inputs=x)")
    # parity on the first ``samples`` test images; int8's accuracy on the whole test set
    x_test, y_test, x_train = ((inputs, None, inputs[:CALIBRATION_IMAGES]) if inputs is not None else
                               real_inputs(recipe, data_dir, test=10**9 if int8 else samples,
                                           train=CALIBRATION_IMAGES if int8 else 0))
    model = model.eval()
    baked = bake(model)
    before = count(baked, shape)
    removed = prune_dead_units(baked) if prune else 0
    proto = graph.to_onnx(baked, shape, _metadata(recipe, data_info, source, source_sha256, prune))
    written, compact_report = (_compacted(proto, recipe) if compact else (proto, None))
    check = graph.parity(written, model, x_test[:samples])
    graph.check_parity(check)
    report = {"path": str(path), "opset": graph.OPSET, "bytes": graph.write_onnx(written, path, exclusive=not force),
              "input_shape": ["batch", *shape], "num_classes": int(data_info["num_classes"]),
              "parity": {**check, "tolerance": graph.PARITY_ATOL}, "before": before,
              "after": count(baked, shape), "dead_units_removed": removed}
    if compact_report is not None:
        report["compact"] = {**compact_report, "fp32_bytes": len(proto.SerializeToString())}
    if int8:
        report["int8"] = quantized.report(proto, path, x_train, x_test, y_test, force)
    return report
