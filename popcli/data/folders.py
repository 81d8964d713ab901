"""CIFAR-10 / CIFAR-100 from torchvision's on-disk python-batches format, into uint8 tensors.

``cifar-10-batches-py`` holds pickled dicts ``data_batch_1..5`` and ``test_batch`` with "data"
uint8 [N, 3072] (R, G, B planes of 32x32) and "labels"; ``cifar-100-python`` holds ``train`` and
``test`` with "fine_labels". Read here (as torchvision does, pickle with latin1) rather than via
torchvision's classes so a damaged file is a DataError naming it, without md5 checks of every file.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": (["train"], ["test"], "fine_labels", 100),
}


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of one pickled batch file."""
    if not path.is_file():
        raise DataError(f"{path.parent}: missing {path.name}; the dataset folder is incomplete, reinstall it or pass --data-dir DIR")
    fix = "the file is corrupt; delete it and reinstall the dataset"
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, IndexError) as err:
        raise DataError(f"{path}: cannot read a CIFAR batch ({err.__class__.__name__}); {fix}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data has shape {data.shape}, expected [N, 3072]; {fix}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.size} labels for {data.shape[0]} images; {fix}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels outside [0, {num_classes}); {fix}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_folder(name: str, folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y) of a CIFAR folder; images uint8 [N, 3, 32, 32]."""
    train_files, test_files, label_key, num_classes = CIFAR_FILES[name]

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_read_batch(folder / f, label_key, num_classes) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(x), torch.from_numpy(y)

    return (*read(train_files), *read(test_files))
