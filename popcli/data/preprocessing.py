"""The preprocessing a model expects, as one dictionary: input shape, classes, mean, std, class names.

``data_config(dataset, shape, num_classes, mean, std, class_names)`` is the ``preprocessing``
entry of an artifact, the ONNX ``popcli.*`` metadata and ``model.popcli_data_config`` (timm's
``pretrained_cfg`` idea), for loaded and for live models alike:

    {"input_shape": [C, H, W], "num_classes": K, "mean": [C floats], "std": [C floats],
     "pixel_scale": 255, "class_names": [K strings] or null, "dataset": name or null}

An input is prepared as ``x = (pixels / pixel_scale - mean) / std`` per channel. Values given
win; otherwise the named dataset's statistics (``facts``: what its loader normalizes with), and
0 / 1 (inputs used as they are) for data popcli does not know. A live model built without an
input shape has ``input_shape`` (and what depends on it) None until a search sees its data.
``check_preprocessing`` refuses values that cannot describe the model, naming the key.
Nothing here prints.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import ModelError
from .facts import class_names as known_names, normalization


def check_preprocessing(shape: Sequence[int] | None, num_classes: int | None, mean: Sequence[float] | None,
                        std: Sequence[float] | None, class_names: Sequence[str] | None) -> None:
    """ModelError naming the key when the values do not fit the model's input and classes."""
    if shape is not None and (len(shape) != 3 or any(int(d) < 1 for d in shape)):
        raise ModelError(f"input_shape {list(shape)}: expected [C, H, W] of positive sizes")
    channels = int(shape[0]) if shape is not None else None
    for key, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        if isinstance(values, (str, bytes)) or not all(isinstance(v, (int, float)) for v in values):
            raise ModelError(f"{key}={values!r}: expected one number per input channel")
        if channels is not None and len(values) != channels:
            raise ModelError(f"{key} has {len(values)} values but the input has {channels} channel(s) "
                             f"(input_shape {list(shape)}); give one per channel")
    if std is not None and not all(v > 0 for v in std):
        raise ModelError(f"std={list(std)}: every value must be positive")
    if class_names is not None:
        if isinstance(class_names, (str, bytes)) or not all(isinstance(c, str) for c in class_names):
            raise ModelError("class_names: expected a list of strings, one per class")
        if num_classes is not None and len(class_names) != int(num_classes):
            raise ModelError(f"class_names has {len(class_names)} names but the model has num_classes={num_classes}")


def data_config(dataset: str | None, shape: Sequence[int] | None, num_classes: int | None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The preprocessing dictionary (see the module docstring); a dataset's own class names only
    for a model that reads that dataset's images and has its class count."""
    shape = [int(d) for d in shape] if shape is not None else None
    known_mean, known_std = normalization(dataset, shape[0]) if shape is not None else (None, None)
    mean = [float(v) for v in mean] if mean else known_mean
    std = [float(v) for v in std] if std else known_std
    names = list(class_names) if class_names else (known_names(dataset, shape) if shape is not None else None)
    if names is not None and num_classes is not None and len(names) != int(num_classes):
        names = None  # a dataset's names for another class count would mislead (given names are checked)
    return {"input_shape": shape, "num_classes": None if num_classes is None else int(num_classes), "mean": mean,
            "std": std, "pixel_scale": 255, "class_names": None if names is None else [str(n) for n in names],
            "dataset": dataset}
