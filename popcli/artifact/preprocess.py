"""Preprocessing that travels with a model: mean, std, input shape, class count and class names.

``data_config(recipe, data_info)`` is the dictionary written into an artifact's metadata (key
``preprocessing``) and into ONNX ``metadata_props`` (``popcli.mean``, ``popcli.std``,
``popcli.input_shape``, ``popcli.num_classes``, ``popcli.class_names``, and all of it as
``popcli.preprocessing``), and exposed by ``popcli.load`` as ``model.popcli_data_config``:

    {"input_shape": [C, H, W], "num_classes": K, "mean": [C floats], "std": [C floats],
     "pixel_scale": 255, "class_names": [K strings] or null, "dataset": name,
     "permute_task": T, "pixel_order": [H*W ints]}   (the last two only for a permuted task)

An input is prepared as ``x = (pixels / pixel_scale - mean) / std`` per channel, shape [B, C, H, W]
(images resized / center-cropped to H x W first), then, for a model searched on a permuted task
(``data.permute_task``), its pixels reordered: model pixel p (flat H*W index, the same in every
channel) is the image's pixel ``pixel_order[p]``. Values given in ``data_info`` (create_model,
subnetify, a user's dataset) win; otherwise the dataset's known statistics are used (the ones its
loader normalizes with; the dictionary itself is ``data.preprocessing``'s). ``from_artifact``
reads the entry, or derives it for files written before it existed (format version 1 files
without it still load). Nothing here prints.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..data.preprocessing import data_config as make_config
from .container import Artifact


def data_config(recipe, data_info: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing description of a model trained on ``recipe.data`` with ``data_info``
    (``data_info["dataset"]``, when present, names the data instead; None for unknown)."""
    dataset = data_info["dataset"] if "dataset" in data_info else recipe.data.dataset
    config = make_config(dataset, data_info["shape"], data_info["num_classes"], data_info.get("mean"),
                         data_info.get("std"), data_info.get("class_names"))
    return with_permutation(config, recipe)


def pixel_order(seed: int, task: int, shape: list[int]) -> list[int]:
    """The pixel permutation of permuted task ``task`` for inputs [C, H, W] (``data.load.permutation``)."""
    from ..data.load import permutation

    return permutation(seed, task, int(shape[1]) * int(shape[2])).tolist()


def with_permutation(config: dict[str, Any], recipe) -> dict[str, Any]:
    """``config`` with the ``permute_task`` and ``pixel_order`` of ``recipe`` (none when it has no
    permuted task): one mask of a multi-mask file has its own task, over the file's shared entry."""
    config = {k: v for k, v in config.items() if k not in ("permute_task", "pixel_order")}
    task = recipe.data.permute_task
    if task is not None:
        config.update(permute_task=task, pixel_order=pixel_order(recipe.seed, task, config["input_shape"]))
    return config


def from_artifact(art: Artifact) -> dict[str, Any]:
    """The artifact's ``preprocessing`` entry (checked at read), or the one derived from its recipe
    and data (older files)."""
    if art.header.preprocessing is None:
        return data_config(art.recipe, art.data_info)
    # the caller's to change (the header stays as read); a multi-mask view's task, not the default's
    return with_permutation(copy.deepcopy(art.header.preprocessing), art.recipe)


def onnx_metadata(config: dict[str, Any]) -> dict[str, str]:
    """The ONNX metadata_props for ``config`` (strings: JSON values)."""
    props = {f"popcli.{key}": json.dumps(config[key], separators=(",", ":"))
             for key in ("mean", "std", "input_shape", "num_classes", "pixel_scale")}
    if config.get("class_names") is not None:
        props["popcli.class_names"] = json.dumps(config["class_names"], separators=(",", ":"))
    props["popcli.preprocessing"] = json.dumps(config, separators=(",", ":"))
    return props
