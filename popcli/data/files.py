"""A user's own input files for ``popcli eval --inputs DIR_OR_NPY --labels FILE`` (and ``inputs=``).

``read_inputs(path, config)`` turns a ``.npy`` array or a folder of images into model inputs
float32 [N, C, H, W] prepared as the model's ``preprocessing`` says (``config``: the artifact's
entry, docs/FORMAT.md): ``x = (pixels / pixel_scale - mean) / std`` per channel, then the pixel
permutation of a permuted task (``pixel_order``). A float ``.npy`` is taken as already prepared;
a uint8 one holds raw pixels [N, C, H, W], [N, H, W, C] or [N, H, W] (one channel). A folder's
images (``imagefolder.EXTENSIONS``) are decoded like an image folder's (shorter side resized,
center crop), sorted by path; with class sub-folders they come with labels (a sub-folder named
like one of the model's classes, else by sorted position). ``read_labels(path, n, names)``
reads ``.npy`` integers or a text file of one label per line (an index or a class name).
Every problem is a DataError naming the file; nothing here prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .imagefolder import EXTENSIONS, decode_image

MAX_INPUTS = 1 << 20  # images read from one --inputs


def _images(folder: Path) -> tuple[list[Path], list[str] | None]:
    """(image files sorted by path, their class sub-folder names or None when the files lie flat)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(EXTENSIONS[:4])}, ...); pass a folder of images or a .npy")
    if len(files) > MAX_INPUTS:
        raise DataError(f"{folder}: {len(files)} images is more than popcli eval reads ({MAX_INPUTS}); pass fewer")
    parents = {p.parent for p in files}
    nested = all(p.parent.parent == folder for p in files) and folder not in parents
    return files, ([p.parent.name for p in files] if nested else None)


def _labels_of_folders(folders: list[str], names: list[str] | None, classes: int, where: Path) -> torch.Tensor:
    """Labels from class sub-folder names: the model's class of that name, else the folder's number
    (``0``, ``1``, ...), else its sorted position (as torchvision's ImageFolder)."""
    order = sorted(set(folders))
    if names is not None and set(order) <= set(names):
        index = {name: names.index(name) for name in order}
    elif names is not None and set(order) & set(names):
        unknown = sorted(set(order) - set(names))
        raise DataError(f"{where}: class folder {unknown[0]!r} is not one of the model's classes "
                        f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}); name the folders like them")
    elif all(name.isdigit() for name in order):
        index = {name: int(name) for name in order}
    else:
        index = {name: i for i, name in enumerate(order)}
    if max(index.values()) >= classes:
        raise DataError(f"{where}: {len(order)} class folders (label up to {max(index.values())}) for a model of "
                        f"{classes} classes")
    return torch.tensor([index[f] for f in folders], dtype=torch.int64)


def _pixels_from_npy(path: Path, shape: list[int]) -> tuple[np.ndarray, bool]:
    """(array, is raw uint8 pixels) of a .npy file, checked against the model's [C, H, W]."""
    try:
        array = np.load(path, allow_pickle=False)  # a file never runs code
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0][:100]})") from None
    c, h, w = shape
    if array.dtype == np.uint8:
        if array.ndim == 3 and c == 1:
            array = array[:, None]
        elif array.ndim == 4 and array.shape[1:] != (c, h, w) and array.shape[1:] == (h, w, c):
            array = array.transpose(0, 3, 1, 2)  # [N, H, W, C] images
    elif not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: {array.dtype} values; pass float32 inputs (prepared) or uint8 pixels")
    if array.ndim != 4 or tuple(array.shape[1:]) != (c, h, w) or len(array) == 0:
        raise DataError(f"{path}: an array of shape {list(array.shape)}; the model takes [N, {c}, {h}, {w}] "
                        f"(uint8 pixels may also be [N, {h}, {w}, {c}])")
    return np.ascontiguousarray(array), array.dtype == np.uint8


def prepare(pixels: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
    """uint8 pixels [N, C, H, W] -> model inputs float32 [N, C, H, W] as ``config`` says:
    ``(pixels / pixel_scale - mean) / std``, computed as the loaders compute it (``x * scale -
    shift`` in float32, ``memory.TensorLoader``) so that the same images give the same bits."""
    channels = pixels.shape[1]
    mean = torch.tensor(config.get("mean") or [0.0] * channels, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(config.get("std") or [1.0] * channels, dtype=torch.float32).reshape(1, -1, 1, 1)
    x = pixels.float() * (1.0 / (float(config.get("pixel_scale") or 255) * std)) - mean / std
    order = config.get("pixel_order")
    if order is not None:  # a permuted task: model pixel p is the image's pixel order[p]
        x = x.flatten(2)[:, :, torch.as_tensor(order)].reshape(x.shape)
    return x


def read_inputs(path: str | Path, config: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(model inputs float32 [N, C, H, W], labels int64 [N] from class sub-folders or None)."""
    path = Path(path).expanduser()
    shape = [int(d) for d in config["input_shape"]]
    if path.is_dir():
        if shape[1] != shape[2]:
            raise DataError(f"{path}: the model takes {shape[1]}x{shape[2]} inputs; images are center-cropped "
                            f"square, so pass a .npy of prepared inputs instead")
        files, folders = _images(path)
        pixels = torch.from_numpy(np.stack([decode_image(f, shape[1], shape[0]) for f in files]))
        labels = (None if folders is None else
                  _labels_of_folders(folders, config.get("class_names"), int(config["num_classes"]), path))
        return prepare(pixels, config), labels
    if not path.is_file():
        raise DataError(f"--inputs {str(path)!r} not found; pass a folder of images or a .npy array")
    if path.suffix.lower() != ".npy":
        raise DataError(f"{path}: --inputs takes a folder of images or a .npy array (numpy.save)")
    array, raw = _pixels_from_npy(path, shape)
    x = torch.from_numpy(array)
    if raw:
        return prepare(x, config), None
    if not torch.isfinite(x).all():
        raise DataError(f"{path}: the inputs hold NaN or infinite values")
    return x.float(), None


def read_labels(path: str | Path, n: int, names: list[str] | None, classes: int) -> torch.Tensor:
    """Labels int64 [n] from a .npy of integers or a text file (one index or class name a line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"--labels {str(path)!r} not found; pass a .npy of integers or a text file, one label a line")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0][:100]})") from None
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{path}: {array.dtype} array of shape {list(array.shape)}; labels are integers [N]")
        values = [int(v) for v in array]
    else:
        values = [_label(line.strip(), names, path, i + 1) for i, line in enumerate(_lines(path)) if line.strip()]
    if len(values) != n:
        raise DataError(f"{path}: {len(values)} labels for {n} inputs; give one label per input, in their order")
    if values and (min(values) < 0 or max(values) >= classes):
        raise DataError(f"{path}: label {max(values) if max(values) >= classes else min(values)} is outside the "
                        f"model's {classes} classes (0..{classes - 1})")
    return torch.tensor(values, dtype=torch.int64)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the labels ({err.__class__.__name__}); a UTF-8 text file or a .npy") from None


def _label(text: str, names: list[str] | None, path: Path, line: int) -> int:
    if text.lstrip("-").isdigit():
        return int(text)
    if names is not None and text in names:
        return names.index(text)
    raise DataError(f"{path}, line {line}: {text[:40]!r} is neither a class index nor one of the model's class names")
