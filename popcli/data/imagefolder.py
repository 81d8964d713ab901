"""``data.dataset: imagefolder``: the user's own class folders, decoded once into memory.

Layout (``data.data_dir``): ``train/<class>/*`` and ``val/<class>/*`` (``test/`` is accepted for
``val/``), or only ``<class>/*``, of which ``data.test_fraction`` of every class is held out as
the test split (drawn from ``torch_generator(seed, "imagefolder_split", class)``). Class names
are the sorted folder names, as torchvision's ImageFolder; train and val must have the same.

Class names (the folder names) must be printable text (``check_class_names``: refused before the
search starts). Every image is opened by ``open_image`` (hostile files: decompression bombs,
extreme aspect ratios, undecodable data are one DataError each), resized so that its shorter
side is ``data.image_size`` and center-cropped to a square (bilinear, antialiased), and kept as
uint8 [N, C, S, S]: C = 1 when
every training image is grayscale, else 3 (RGB). Normalization is ``data.mean``/``data.std``
when given, else the per-channel mean/std of the training split's pixels in [0, 1]. The splits
then go through the in-memory ``TensorLoader`` (exact resume; augmentation: random crop with
S/8 padding + horizontal flip unless ``data.augment: false``). Nothing here prints.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import DataError
from ..recipe import DataConfig
from ..rng import torch_generator
from ..storage.strict_json import printable

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
MAX_ASPECT = 64  # an image whose long side is more than this many times its short side is refused


def check_class_names(folder: Path, names: list[str]) -> None:
    """Class names come from folder names and end up in the artifact, the ONNX metadata and the
    terminal: each must be printable text (``strict_json.printable``: valid UTF-8, no newline, no
    ANSI escape, at most 256 characters), refused here, before the search starts."""
    for name in names:
        if not printable(name):
            raise DataError(f"{_escaped(folder)}: class folder '{_escaped(name)[:80]}' is not a usable class name (it "
                            f"must be valid UTF-8 without control characters such as newlines or escapes, at most 256 "
                            f"characters); rename the folder")


def _escaped(text) -> str:
    """``text`` for one line of a message: bytes that were not UTF-8 as \\xNN, control characters escaped."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c if c.isprintable() or c == " "
                   else repr(c)[1:-1] for c in str(text))


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """{class name: sorted image files} of a class-folder tree (sorted names)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; data.data_dir must hold train/ and val/ class folders, or class "
                        f"folders directly")
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
        if files:
            classes[sub.name] = files
    check_class_names(folder, list(classes))
    if len(classes) < 2:
        raise DataError(f"{folder}: found {len(classes)} class folder(s) with images ({', '.join(EXTENSIONS[:3])}, ...); "
                        f"an image folder needs one sub-folder per class, at least two")
    return classes


def _layout(cfg: DataConfig, seed: int) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]], str]:
    """(class names, train samples, test samples, where the test split came from)."""
    if not cfg.data_dir:
        raise DataError("data.dataset=imagefolder needs data.data_dir (or --data-dir): a folder with train/ and val/ "
                        "class folders, or class folders directly")
    root = Path(cfg.data_dir).expanduser()
    val_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        train, test = _class_files(root / "train"), _class_files(val_dir)
        if list(train) != list(test):
            raise DataError(f"{root}: train/ has classes {list(train)[:5]} but {val_dir.name}/ has {list(test)[:5]}; "
                            f"give both the same class folders")
        names = list(train)
        return names, _samples(train, names), _samples(test, names), f"{val_dir.name}/"
    classes = _class_files(root)
    names, train_s, test_s = list(classes), [], []
    for label, name in enumerate(names):  # per class, so every class is in both splits
        files = classes[name]
        n_test = max(1, round(cfg.test_fraction * len(files)))
        if n_test >= len(files):
            raise DataError(f"{root / name}: {len(files)} image(s) cannot give both a train and a test split at "
                            f"data.test_fraction={cfg.test_fraction}; add images or give train/ and val/ folders")
        order = torch.randperm(len(files), generator=torch_generator(seed, "imagefolder_split", name)).tolist()
        test_s += [(files[i], label) for i in sorted(order[:n_test])]
        train_s += [(files[i], label) for i in sorted(order[n_test:])]
    return names, train_s, test_s, f"test_fraction={cfg.test_fraction}"


def _samples(classes: dict[str, list[Path]], names: list[str]) -> list[tuple[Path, int]]:
    return [(path, label) for label, name in enumerate(names) for path in classes[name]]


@contextmanager
def open_image(path: Path) -> Iterator:
    """``PIL.Image.open(path)`` for an image of a data folder, whatever the folder holds: more pixels
    than PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, about 89 million) and sides
    more than ``MAX_ASPECT`` apart (a resize to the model's input would need gigabytes) are
    refused, and an undecodable or oversized file is a DataError naming it, never a traceback."""
    from PIL import Image

    fix = "delete or replace the file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if max(w, h) > MAX_ASPECT * max(1, min(w, h)):
                    raise DataError(f"{path}: the image is {w}x{h}, its sides more than {MAX_ASPECT} times apart; "
                                    f"crop it or {fix}")
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path}: the image has more pixels than PIL decodes safely ({Image.MAX_IMAGE_PIXELS:,}); "
                        f"downscale it or {fix}") from None
    except MemoryError:
        raise DataError(f"{path}: the image does not fit in memory; downscale it or {fix}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot decode image ({err.__class__.__name__}); {fix}") from None


def _is_gray(path: Path) -> bool:
    """Whether an image has one channel (a palette image counts when its colors are all gray)."""
    with open_image(path) as img:
        if img.mode == "P":
            rgb = np.asarray(img.convert("RGB"))
            return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        return img.mode in GRAY_MODES


def _decode(path: Path, size: int, mode: str) -> np.ndarray:
    """One image -> uint8 [C, size, size]: shorter side resized to ``size``, center crop."""
    from PIL import Image

    with open_image(path) as img:
        img = img.convert(mode)
        w, h = img.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.BILINEAR, reducing_gap=None)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        array = np.asarray(img, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _stack(samples: list[tuple[Path, int]], size: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.stack([_decode(path, size, mode) for path, _ in samples])  # [N, C, S, S] uint8
    return torch.from_numpy(images), torch.tensor([label for _, label in samples], dtype=torch.int64)


def _stats(cfg: DataConfig, train_x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel: the recipe's, else the training pixels' (in [0, 1])."""
    channels = train_x.shape[1]
    if cfg.mean is None and cfg.std is None:
        pixels = train_x.transpose(0, 1).reshape(channels, -1).double() / 255.0
        mean, std = pixels.mean(1), pixels.std(1, unbiased=False).clamp_min(1e-6)
        return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)
    if cfg.mean is None or cfg.std is None or len(cfg.mean) != channels or len(cfg.std) != channels:
        raise DataError(f"data.mean and data.std must both be given, with {channels} value(s) each (the images have "
                        f"{channels} channel(s)), or both be omitted to compute them from the training images")
    if min(cfg.std) <= 0:
        raise DataError(f"data.std: {cfg.std} must be positive")
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


def read_image_folder(cfg: DataConfig, seed: int):
    """((train_x, train_y, test_x, test_y), class names, (mean, std), source description)."""
    names, train_s, test_s, split = _layout(cfg, seed)
    gray = all(_is_gray(path) for path, _ in train_s)
    mode = "L" if gray else "RGB"
    train_x, train_y = _stack(train_s, cfg.image_size, mode)
    test_x, test_y = _stack(test_s, cfg.image_size, mode)
    source = f"{Path(cfg.data_dir).expanduser()} ({split})"
    return (train_x, train_y, test_x, test_y), names, _stats(cfg, train_x), source


def decode_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file -> uint8 [channels, size, size] as this module decodes a folder's images
    (shorter side resized to ``size``, center crop; 1 channel: grayscale, 3: RGB)."""
    return _decode(path, size, "L" if channels == 1 else "RGB")
