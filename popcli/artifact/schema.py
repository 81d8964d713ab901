"""The artifact header's schema: every required metadata entry parsed, typed, range-checked and
checked against its one source of truth, before anything is built or allocated.

``parse(path, meta, version)`` turns the ``__metadata__`` strings of version 2's entries into a
``Required`` record (recipe, data info, layer records, metrics, ...) or raises an
``ArtifactError`` with one line naming the entry; ``extras`` parses the optional ones and
``multimask`` the other masks', and ``container.Header`` holds them all. The facts and where
each lives (docs/FORMAT.md, "Which copy wins"):

- the resolved ``recipe`` is the source of the seed, the architecture and its arguments, the
  init, the method and the densities; the top-level ``seed``, ``arch``, ``init``, ``method``,
  ``density`` and ``init_density`` are copies for quick readers and must equal it;
- ``data`` is the source of the input shape and class count (the recipe's data section says
  where the data came from; for synthetic data, which it generates, it must agree);
- ``layers`` must equal, name for name and shape for shape, the masked layers the architecture
  builds (checked by ``reader`` on the meta device, before any weight is drawn).

``check_tensors`` refuses stored statistics that no model could hold (NaN, infinities,
negative variances, negative counts). Unknown metadata keys and unknown keys inside ``data``,
``layers`` records and ``metrics`` are allowed (optional keys of later versions) and ignored.
Nothing here prints or builds a model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..codecs import CODECS
from ..errors import ArtifactError, PopcliError
from ..models import init_density
from ..nn import kept_count
from ..recipe import Recipe, from_dict
from ..storage.strict_json import MAX_TEXT, printable, loads as strict_json

# Recipe keys that decide which model the file holds: a file must state each one itself (not
# leave it to this popcli's defaults, which may differ from the writer's).
MODEL_KEYS = ("seed", "model.arch", "model.init", "model.width", "model.hidden", "model.batchnorm", "search.method",
              "search.density", "search.global_topk", "search.dense_first", "search.dense_last", "data.dataset")
MAX_DIM = 1 << 31  # a weight dimension or image side larger than this is not a model popcli built
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_METRIC_RANGES = {"test_acc": (0.0, 1.0), "test_top5": (0.0, 1.0), "val_acc": (0.0, 1.0), "train_acc": (0.0, 1.0),
                  "test_loss": (0.0, math.inf),
                  "train_loss": (0.0, math.inf), "steps": (0, math.inf), "step": (0, math.inf),
                  "epochs": (0.0, math.inf), "epoch": (0, math.inf), "wall_s": (0.0, math.inf),
                  "density_reached": (0.0, 1.0)}


@dataclass(frozen=True)
class LayerRecord:
    """One masked layer as the metadata describes it."""

    name: str
    shape: tuple[int, ...]
    kept: int  # weights kept (ones in the mask)
    sha256: str  # of the regenerated float32 weight (little-endian, C order)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "kept": self.kept, "sha256": self.sha256}


@dataclass(frozen=True)
class Required:
    """The entries every artifact has, parsed and checked."""

    recipe: Recipe
    data_info: dict[str, Any]  # {"shape": [C, H, W], "num_classes": K} (plus any optional keys)
    layers: list[LayerRecord]
    metrics: dict[str, Any]
    checkpoint_bytes: int | None
    codec: str  # mask_codec, one of codecs.CODECS
    content_sha256: str
    popcli_version: str | None
    torch_version: str | None


# --------------------------------------------------------------------------- primitives


def bad(path: Path, key: str, problem: str) -> ArtifactError:
    return ArtifactError(f"{path}: metadata {key!r} {problem} (corrupt or hand-edited artifact); re-export it")


def json_entry(path: Path, meta: dict[str, str], key: str, kind: type) -> Any:
    if key not in meta:
        raise ArtifactError(f"{path}: metadata has no {key!r} (corrupt or incomplete artifact); re-export it")
    try:
        value = strict_json(meta[key])
    except (ValueError, RecursionError):
        raise bad(path, key, "is not valid JSON") from None
    return kind_check(path, key, value, kind)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def count(path: Path, key: str, value: Any, lo: int, hi: int) -> int:
    if not is_int(value) or not lo <= value <= hi:
        raise bad(path, key, f"holds {str(value)[:40]!r}, expected an integer in [{lo}, {hi}]")
    return value


def safe_text(value: Any) -> bool:
    """A short string without control characters (it is shown in terminals): ``strict_json.printable``."""
    return printable(value, MAX_TEXT)


def _decimal(path: Path, meta: dict[str, str], key: str) -> int:
    text = meta.get(key)
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        raise bad(path, key, f"holds {str(text)[:40]!r}, expected a decimal integer")
    return int(text)


# --------------------------------------------------------------------------- entries


def parse_recipe(path: Path, raw: dict[str, Any], version: int, key: str = "recipe") -> Recipe:
    """A resolved recipe (metadata ``recipe``, or a mask's ``mask.NAME.recipe``): every model key
    stated; version 2 and later store its seed as a decimal string (exact in any JSON parser)."""
    if version >= 2:
        if not isinstance(raw.get("seed"), str) or not _DECIMAL.fullmatch(raw["seed"]):
            raise bad(path, key, "has no seed as a decimal string (format version 2 stores it so)")
        raw = {**raw, "seed": int(raw["seed"])}
    elif not is_int(raw.get("seed")):
        raise bad(path, key, "has no integer seed")
    for dotted in MODEL_KEYS:
        section, _, name = dotted.partition(".")
        holder = raw.get(section) if name else raw
        if not isinstance(holder, dict) or (name or section) not in holder:
            raise bad(path, key, f"does not state {dotted}, which decides the model")
    try:
        return from_dict(raw)
    except PopcliError as err:
        where = "its recipe" if key == "recipe" else f"metadata {key!r}"
        raise ArtifactError(f"{path}: {where} is invalid for this popcli ({err})") from None


def _copies(path: Path, meta: dict[str, str], recipe: Recipe) -> None:
    """The top-level copies of recipe facts must state the recipe's values."""
    if _decimal(path, meta, "seed") != recipe.seed:
        raise bad(path, "seed", f"says {meta['seed']} but the recipe's seed is {recipe.seed}")
    for key, value in (("arch", recipe.model.arch), ("init", recipe.model.init), ("method", recipe.search.method)):
        if meta.get(key) != value:
            raise bad(path, key, f"says {str(meta.get(key))[:40]!r} but the recipe says {value!r}")
    for key, value in (("density", recipe.search.density), ("init_density", init_density(recipe.search))):
        try:
            number = float(meta.get(key, ""))
        except ValueError:
            number = math.nan
        if number != value:
            raise bad(path, key, f"says {str(meta.get(key))[:40]!r} but the recipe gives {value!r}")


def _data(path: Path, meta: dict[str, str], recipe: Recipe) -> dict[str, Any]:
    """{"shape": [C, H, W], "num_classes": K}, checked against the recipe where it fixes them."""
    data = json_entry(path, meta, "data", dict)
    shape, classes = data.get("shape"), data.get("num_classes")
    if not isinstance(shape, list) or len(shape) != 3:
        raise bad(path, "data", f"has shape {str(shape)[:40]}, expected [C, H, W]")
    for i, side in enumerate(shape):
        count(path, f"data.shape[{i}]", side, 1, 1 << 16)
    count(path, "data.num_classes", classes, 1, 1 << 24)
    check_recipe_data(path, "data", recipe, data)
    return data


def check_recipe_data(path: Path, key: str, recipe: Recipe, data: dict[str, Any]) -> None:
    """Synthetic data is the one case where a recipe itself fixes the input (a copy of ``data``)."""
    cfg, shape, classes = recipe.data, data["shape"], data["num_classes"]
    if cfg.dataset == "synthetic" and (list(shape), classes) != (list(cfg.shape), cfg.num_classes):
        if key == "data":
            raise bad(path, key, f"says shape {list(shape)} and {classes} classes, but the recipe's synthetic data has "
                                  f"{list(cfg.shape)} and {cfg.num_classes}")
        raise bad(path, key, f"has synthetic data of shape {list(cfg.shape)} and {cfg.num_classes} classes, but "
                              f"'data' says {list(shape)} and {classes}")


def _layers(path: Path, meta: dict[str, str]) -> list[LayerRecord]:
    records = []
    for i, raw in enumerate(json_entry(path, meta, "layers", list)):
        where = f"layers[{i}]"
        if not isinstance(raw, dict):
            raise bad(path, where, "is not a JSON object")
        name, shape, kept, digest = raw.get("name"), raw.get("shape"), raw.get("kept"), raw.get("sha256")
        if not safe_text(name) or not name:
            raise bad(path, f"{where}.name", "is not a layer name")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
            raise bad(path, f"{where}.shape", f"is {str(shape)[:40]}, expected a list of sizes")
        dims = tuple(count(path, f"{where}.shape", d, 1, MAX_DIM) for d in shape)
        record = LayerRecord(name, dims, count(path, f"{where}.kept", kept, 0, math.prod(dims)), str(digest))
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise bad(path, f"{where}.sha256", "is not 64 lowercase hex digits")
        records.append(record)
    if len({r.name for r in records}) != len(records):
        raise bad(path, "layers", "names a layer twice")
    return records


def check_kept_counts(path: Path, recipe: Recipe, layers: list[LayerRecord], metrics: dict[str, Any],
                      key: str = "layers") -> None:
    """Edge-popup keeps exactly ``kept_count(n, density)`` of each layer (global top-k: of all
    layers together), so the recipe's density and the records' kept counts must agree; an
    annealed run stopped early keeps its ``metrics.density_reached`` instead."""
    density = recipe.search.density
    if getattr(recipe.search, "density_schedule", "constant") != "constant":
        density = metrics.get("density_reached", density if "steps" in metrics else None)
    if recipe.search.method != "edge-popup" or density is None or not layers:
        return
    groups = [layers] if recipe.search.global_topk else [[r] for r in layers]
    for group in groups:
        kept, want = sum(r.kept for r in group), kept_count(sum(r.numel for r in group), density)
        if kept != want:
            where = "all layers" if len(group) > 1 else f"layer {group[0].name!r}"
            which = "the recipe's density" if density == recipe.search.density else "metrics.density_reached"
            raise bad(path, key, f"keeps {kept} weights of {where}, but edge-popup at {which} {density!r} keeps {want}")


def check_metrics(path: Path, metrics: dict[str, Any], key: str = "metrics") -> dict[str, Any]:
    """``metrics`` (parsed, a JSON object) with every known key a number in its range, or null."""
    for name, (lo, hi) in _METRIC_RANGES.items():
        value = metrics.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not lo <= value <= hi):
            raise bad(path, f"{key}.{name}", f"is {str(value)[:40]!r}, expected a number in [{lo}, {hi}] or null")
    return metrics


def kind_check(path: Path, key: str, value: Any, kind: type) -> Any:
    """``value`` (parsed JSON) if it is a JSON ``kind``, else the one-line error ``json_entry`` gives."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad(path, key, f"is a JSON {type(value).__name__}, expected a JSON {kind.__name__}")
    return value


def parse(path: Path, meta: dict[str, str], version: int) -> Required:
    """The checked required entries of a file whose versions and content checksum are already verified."""
    for key in ("popcli_version", "torch_version"):
        if key in meta and not safe_text(meta[key]):
            raise bad(path, key, "is not a short printable version string")
    if meta.get("mask_codec") not in CODECS:
        raise ArtifactError(f"{path}: unknown mask codec {str(meta.get('mask_codec'))[:40]!r} (this popcli knows "
                            f"{', '.join(CODECS)}); upgrade popcli")
    if not _HEX64.fullmatch(meta.get("content_sha256", "")):
        raise bad(path, "content_sha256", "is not 64 lowercase hex digits")
    recipe = parse_recipe(path, json_entry(path, meta, "recipe", dict), version)
    _copies(path, meta, recipe)
    checkpoint = _decimal(path, meta, "checkpoint_bytes") if "checkpoint_bytes" in meta else None
    layers = _layers(path, meta)
    metrics = check_metrics(path, json_entry(path, meta, "metrics", dict)) if "metrics" in meta else {}
    check_kept_counts(path, recipe, layers, metrics)
    return Required(recipe, _data(path, meta, recipe), layers, metrics, checkpoint, meta["mask_codec"],
                    meta["content_sha256"], meta.get("popcli_version"), meta.get("torch_version"))


# --------------------------------------------------------------------------- tensors


def check_tensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Stored values no model could hold: non-finite floats, negative variances or counts."""
    for name, value in tensors.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ArtifactError(f"{path}: tensor {name!r} holds NaN or infinite values (corrupt artifact, or a "
                                f"diverged search); re-export it from a good checkpoint")
        if name.endswith(("running_var", "num_batches_tracked")) and value.size and value.min() < 0:
            raise ArtifactError(f"{path}: tensor {name!r} holds negative values, which batch-norm statistics cannot "
                                f"have (corrupt artifact); re-export it")
