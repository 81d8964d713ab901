"""IDX files (the MNIST / Fashion-MNIST format), gzipped or raw, read into uint8 tensors.

An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte, the only one used here), a
byte with the number of dimensions d, d big-endian uint32 sizes, then prod(sizes) data bytes.
Any deviation (bad magic, wrong size, gzip damage, images/labels count mismatch) raises
DataError naming the file. Finding the folder is ``resolve``'s job.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .resolve import IDX_STEMS

_UBYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({err.__class__.__name__}: {err}); the file is corrupt, delete it and reinstall the dataset") from None


def read_idx(path: str | Path, ndim: int) -> torch.Tensor:
    """The uint8 array stored in one IDX file, checked to have ``ndim`` dimensions."""
    path = Path(path)
    data = _read_bytes(path)
    fix = "the file is corrupt or not an IDX file; reinstall the dataset"
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or data[3] != ndim:
        raise DataError(f"{path}: bad IDX magic {data[:4].hex() or '(empty)'} (expected 000008{ndim:02x}); {fix}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes); {fix}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise DataError(f"{path}: wrong size {len(data)} bytes for IDX dims {dims} (expected {expected}); {fix}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(array.copy())


def idx_file(folder: Path, stem: str) -> Path:
    """``stem`` in ``folder``: raw before .gz, ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, dotted, stem + ".gz", dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: missing {stem}[.gz]; the dataset folder is incomplete, reinstall it or pass --data-dir DIR")


def read_pair(folder: Path, images_stem: str, labels_stem: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 1, H, W], labels int64 [N]) from one images/labels file pair."""
    images_path, labels_path = idx_file(folder, images_stem), idx_file(folder, labels_stem)
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[0] == 0 or min(images.shape[1:]) == 0:
        raise DataError(f"{images_path}: holds {images.shape[0]} images of {images.shape[1]}x{images.shape[2]} pixels; "
                        f"a split needs at least one image: the file is truncated or was replaced, reinstall the dataset")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path.name}; reinstall the dataset")
    if labels.numel() and int(labels.max()) >= num_classes:
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range for {num_classes} classes; reinstall the dataset")
    return images.unsqueeze(1), labels.long()


def read_mnist_folder(folder: Path, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y) of an MNIST-style folder; images uint8 [N, 1, H, W]."""
    train_x, train_y = read_pair(folder, IDX_STEMS[0], IDX_STEMS[1], num_classes)
    test_x, test_y = read_pair(folder, IDX_STEMS[2], IDX_STEMS[3], num_classes)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{folder}: train images are {tuple(train_x.shape[2:])} but test images {tuple(test_x.shape[2:])}; reinstall the dataset")
    return train_x, train_y, test_x, test_y
