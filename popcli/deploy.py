"""From a found subnetwork to deployable ONNX files: bake, (prune), export, verify, (quantize).

``export_onnx(model, recipe, data_info, path, ...)`` bakes the model (``bake``), optionally
removes dead units, exports it (``onnx_export``), checks ONNX Runtime against the *original*
PyTorch model on real test images (an error, and no file, beyond ``PARITY_ATOL``), writes it,
and with ``int8`` also writes ``<name>.int8.onnx`` (static QDQ, calibrated on training images)
with its accuracy and speed against fp32 (measured by ``bench``). Nothing prints.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from . import __version__, onnx_export, preprocess
from .bake import bake, count, prune_dead_units
from .bench import CALIBRATION_IMAGES, accuracy, latency, real_inputs
from .artifact import check_output
from .errors import ArtifactError
from .recipe import Recipe

def _metadata(recipe: Recipe, data_info: dict[str, Any], source: str, source_sha256: str, pruned: bool) -> dict[str, str]:
    return {
        "popcli.version": __version__, "popcli.seed": str(recipe.seed), "popcli.arch": recipe.model.arch,
        "popcli.init": recipe.model.init, "popcli.method": recipe.search.method,
        "popcli.density": repr(recipe.search.density), "popcli.source": source,
        "popcli.source_sha256": source_sha256, "popcli.dead_units_removed": str(pruned).lower(),
        "popcli.data": json.dumps({**data_info, "dataset": recipe.data.dataset}, separators=(",", ":")),
        "popcli.recipe": json.dumps(recipe.to_dict(), separators=(",", ":")),
        **preprocess.onnx_metadata(preprocess.data_config(recipe, data_info)),
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def int8_path(path: Path) -> Path:
    return path.with_name(path.stem + ".int8.onnx")


def _int8(proto, path: Path, x_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
          force: bool) -> dict[str, Any]:
    quantized = onnx_export.quantize_int8(proto, x_train.split(64))
    target = int8_path(path)
    nbytes = onnx_export.write_onnx(quantized, target, exclusive=not force)
    fp32, int8 = onnx_export.session(proto), onnx_export.session(quantized)
    batch = x_test[:64].repeat(-(-64 // max(1, len(x_test[:64]))), 1, 1, 1)[:64]
    speed = {name: latency(lambda s=sess: onnx_export.run(s, batch), len(batch))["p50_ms"]
             for name, sess in (("fp32", fp32), ("int8", int8))}
    acc = {name: accuracy(lambda x, s=sess: onnx_export.run(s, x), x_test, y_test) for name, sess in
           (("fp32", fp32), ("int8", int8))}
    return {"path": str(target), "bytes": nbytes, "fp32_acc": acc["fp32"], "int8_acc": acc["int8"],
            "acc_change_points": 100 * (acc["int8"] - acc["fp32"]), "batch64_fp32_ms": speed["fp32"],
            "batch64_int8_ms": speed["int8"], "int8_over_fp32": speed["int8"] / speed["fp32"],
            "test_samples": len(y_test)}


def export_onnx(model: torch.nn.Module, recipe: Recipe, data_info: dict[str, Any], path: str | Path, *,
                source: str, source_sha256: str, prune: bool = False, int8: bool = False,
                data_dir: str | None = None, samples: int = 1000, force: bool = False,
                inputs: torch.Tensor | None = None) -> dict[str, Any]:
    """Bake, export, verify and write ``model`` as ONNX (see the module docstring); the report.
    ``inputs`` [N, C, H, W]: the images to check parity on instead of the recipe's test set (a
    user's own data, ``data.dataset: user``); not with ``int8``, which calibrates on the recipe's."""
    path = Path(path)
    check_output(path, force, "--onnx")
    if int8:
        check_output(int8_path(path), force, "--onnx")
    shape = tuple(int(d) for d in data_info["shape"])
    if inputs is not None and int8:
        raise ArtifactError("int8 calibrates on the recipe's dataset; export int8 without inputs=")
    # parity on the first ``samples`` test images; int8's accuracy on the whole test set
    x_test, y_test, x_train = ((inputs, None, None) if inputs is not None else
                               real_inputs(recipe, data_dir, test=10**9 if int8 else samples,
                                           train=CALIBRATION_IMAGES if int8 else 0))
    model = model.eval()
    baked = bake(model)
    before = count(baked, shape)
    removed = prune_dead_units(baked) if prune else 0
    proto = onnx_export.to_onnx(baked, shape, _metadata(recipe, data_info, source, source_sha256, prune))
    check = onnx_export.parity(proto, model, x_test[:samples])
    onnx_export.check_parity(check)
    report = {"path": str(path), "opset": onnx_export.OPSET, "bytes": onnx_export.write_onnx(proto, path, exclusive=not force),
              "input_shape": ["batch", *shape], "num_classes": int(data_info["num_classes"]),
              "parity": {**check, "tolerance": onnx_export.PARITY_ATOL}, "before": before,
              "after": count(baked, shape), "dead_units_removed": removed}
    if int8:
        report["int8"] = _int8(proto, path, x_train, x_test, y_test, force)
    return report
