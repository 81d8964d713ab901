"""Schema of the optional artifact metadata entries that later work added beside version 2's.

``preprocessing`` (``artifact.preprocess``), ``method_state`` (``popcli.methods.store``),
``model_source`` (``popcli.models.external``), ``frozen`` (``artifact.frozen``) and ``iterand``
(``artifact.redraws``) are parsed
and checked here, at ``read`` time, into an ``Optional`` record, so that ``inspect`` (which
builds no model) and ``load`` see only well-formed values: every problem is one
``ArtifactError`` line, never a ``TypeError`` from code that trusted the file. The meaning of each
entry stays with the module that writes it; this module checks shapes, types and ranges only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codecs import CODECS
from ..errors import ArtifactError
from ..storage.strict_json import loads as strict_json
from . import preprocess, redraws
from .schema import LayerRecord, bad, is_int, json_entry, kind_check, safe_text

ABSENT = object()  # an entry the file does not have (JSON null is a value)


@dataclass(frozen=True)
class Optional:
    """The optional entries, parsed (None or empty when the file has none)."""

    preprocessing: dict[str, Any] | None = None  # {"input_shape", "num_classes", "mean", "std", ...}
    method_state: dict[str, Any] | None = None  # biprop {"alpha"}; signed-supermask {"sign_codec", "inverted"}
    model_source: dict[str, Any] | None = None  # {"kind", "target", "package", "version"}
    frozen: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "shape", "sha256"}]
    iterand: dict[str, Any] | None = None  # {"codec", "redrawn", "draws", "sha256"} (artifact.redraws)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _preprocessing(path: Path, meta: dict[str, str], data: dict[str, Any], recipe) -> dict[str, Any]:
    """{"input_shape": data's shape, "num_classes": data's, "mean"/"std": C finite floats (std > 0),
    "pixel_scale": > 0, "class_names": K strings or null, "dataset": string or null}."""
    value = json_entry(path, meta, "preprocessing", dict)
    shape, classes = list(data["shape"]), data["num_classes"]
    if value.get("input_shape") != shape or value.get("num_classes") != classes:
        raise bad(path, "preprocessing", f"describes input {str(value.get('input_shape'))[:40]} with "
                                          f"{str(value.get('num_classes'))[:12]} classes, but 'data' says {shape} with {classes}")
    for key in ("mean", "std"):
        values = value.get(key)
        if not isinstance(values, list) or len(values) != shape[0] or not all(_finite(v) for v in values):
            raise bad(path, f"preprocessing.{key}", f"is not {shape[0]} finite numbers (one per channel)")
    if not all(v > 0 for v in value["std"]) or not (_finite(value.get("pixel_scale")) and value["pixel_scale"] > 0):
        raise bad(path, "preprocessing", "has a std or pixel_scale that is not positive")
    names = value.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != classes
                              or not all(safe_text(n) for n in names)):
        raise bad(path, "preprocessing.class_names", f"is not null or {classes} short printable names")
    if value.get("dataset") is not None and not safe_text(value["dataset"]):
        raise bad(path, "preprocessing.dataset", "is not null or a short printable name")
    _check_pixel_order(path, value, recipe, shape)
    return value


def _check_pixel_order(path: Path, value: dict[str, Any], recipe, shape: list[int]) -> None:
    """``pixel_order`` (a permuted task's pixel permutation) and ``permute_task`` are copies of the
    recipe's ``data.permute_task``: the order it draws (``preprocess.pixel_order``), or absent."""
    task = recipe.data.permute_task
    if value.get("permute_task", task) != task:
        raise bad(path, "preprocessing.permute_task", f"is {str(value.get('permute_task'))[:12]}, the recipe's "
                                                       f"data.permute_task is {task}")
    if "pixel_order" not in value:
        return  # files written before 0.3 leave it to the recipe
    if task is None or value["pixel_order"] != preprocess.pixel_order(recipe.seed, task, shape):
        raise bad(path, "preprocessing.pixel_order", "is not the permutation the recipe's data.permute_task draws")


def parse_method_state(path: Path, key: str, state: Any, method: str, layers: list[LayerRecord]) -> dict[str, Any] | None:
    """``state`` (the parsed entry ``key``; ``ABSENT`` when the file has none) checked for ``method``:
    biprop: {"alpha": [finite float >= 0 per masked layer]}; signed-supermask: {"sign_codec": a
    codec, "inverted": [0 <= int <= kept per layer]}; subspace: {"projection", "dim", "dtype",
    "weights_sha256"} (their values checked by ``methods.store.check``); any other method: no entry."""
    if method not in ("biprop", "signed-supermask", "subspace"):
        if state is not ABSENT:
            raise bad(path, key, f"is present, but method {method!r} stores no state")
        return None
    if state is ABSENT:
        raise ArtifactError(f"{path}: metadata has no {key!r}, which method {method!r} needs (corrupt or incomplete "
                            f"artifact); re-export it")
    state = kind_check(path, key, state, dict)
    if method == "subspace":
        return _subspace_state(path, key, state)
    name = "alpha" if method == "biprop" else "inverted"
    values = state.get(name)
    if not isinstance(values, list) or len(values) != len(layers):
        raise bad(path, f"{key}.{name}", f"does not list the {len(layers)} masked layers")
    if method == "biprop" and not all(_finite(v) and v >= 0 for v in values):
        raise bad(path, f"{key}.alpha", "holds a value that is not a finite non-negative number")
    if method == "signed-supermask":
        if not all(is_int(v) and 0 <= v <= r.kept for v, r in zip(values, layers)):
            raise bad(path, f"{key}.inverted", "holds a count that is not an integer between 0 and the kept count")
        if state.get("sign_codec") not in CODECS:
            raise bad(path, f"{key}.sign_codec", f"is {str(state.get('sign_codec'))[:20]!r}, not one of {list(CODECS)}")
    return state


def _subspace_state(path: Path, key: str, state: dict[str, Any]) -> dict[str, Any]:
    if not is_int(state.get("dim")) or state["dim"] < 1:
        raise bad(path, f"{key}.dim", "is not a positive integer")
    if state.get("dtype") not in ("float32", "float16"):
        raise bad(path, f"{key}.dtype", "is not float32 or float16")
    for name in ("projection", "weights_sha256"):
        if not isinstance(state.get(name), str) or not safe_text(state[name]):
            raise bad(path, f"{key}.{name}", "is not a short printable string")
    return state


def _model_source(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    """{"kind": str, "target": str, "package": str or null, "version": str or null}."""
    value = json_entry(path, meta, "model_source", dict)
    for key, required in (("kind", True), ("target", True), ("package", False), ("version", False)):
        item = value.get(key)
        if (item is None and required) or (item is not None and not safe_text(item)):
            raise bad(path, f"model_source.{key}", "is not a short printable string")
    return value


def _frozen(path: Path, meta: dict[str, str]) -> list[dict[str, Any]]:
    """[{"name", "shape", "sha256"}, ...]: the parameters regenerated from the seed (absent: none);
    their names and checksums are checked against the rebuilt model (``frozen.fill_frozen``)."""
    try:
        value = strict_json(meta.get("frozen", "[]"))
    except (ValueError, RecursionError):
        raise ArtifactError(f"{path}: metadata 'frozen' is not valid JSON (corrupt artifact)") from None
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise ArtifactError(f"{path}: metadata 'frozen' is malformed (corrupt artifact)")
    return value


def parse(path: Path, meta: dict[str, str], recipe, data: dict[str, Any], layers: list[LayerRecord]) -> Optional:
    """Every optional entry present in ``meta``, parsed and checked (ArtifactError naming the entry)
    against the file's ``recipe`` (its method; a permuted task's pixel order)."""
    method = recipe.search.method
    preprocessing = _preprocessing(path, meta, data, recipe) if "preprocessing" in meta else None
    raw_state = json_entry(path, meta, "method_state", object) if "method_state" in meta else ABSENT
    method_state = parse_method_state(path, "method_state", raw_state, method, layers)
    model_source = _model_source(path, meta) if "model_source" in meta else None
    return Optional(preprocessing, method_state, model_source, _frozen(path, meta),
                    redraws.parse(path, meta, recipe, layers, json_entry))
