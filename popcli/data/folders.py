"""CIFAR-10 / CIFAR-100 from torchvision's on-disk python-batches format, into uint8 tensors.

``cifar-10-batches-py`` holds pickled dicts ``data_batch_1..5`` and ``test_batch`` with "data"
uint8 [N, 3072] (R, G, B planes of 32x32) and "labels"; ``cifar-100-python`` holds ``train`` and
``test`` with "fine_labels". Read here rather than via torchvision's classes, so that a damaged
file is a DataError naming it, without md5 checks of every file, and so that a data folder that
came with a file cannot run code: the batches are pickles, read (with latin1, as torchvision
does) by an unpickler that admits only what the format holds (``_BatchUnpickler``: dicts, lists,
str, bytes, ints and numpy arrays of numbers; no other class or function can be named).
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


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch and nothing else: the only globals a pickle may name are numpy's
    array and scalar constructors (numpy 1 and 2 module names); every other one is refused, so no
    other code can be called. What it builds is checked afterwards (``_plain``)."""

    def find_class(self, module: str, name: str):
        core = module.replace("numpy._core.", "numpy.core.")  # numpy 2 pickles name numpy._core
        if (core, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar")):
            return getattr(_numpy_core().multiarray, name)
        if (core, name) == ("numpy.core.numeric", "_frombuffer"):  # protocol 5
            return getattr(_numpy_core().numeric, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # bytes in a protocol 0-2 pickle written by Python 3
            return _latin1_bytes
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch does not hold")


def _numpy_core():
    """numpy's core package (``numpy._core`` in numpy 2, ``numpy.core`` before)."""
    return getattr(np, "_core", None) or np.core


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes (``encode(str, "latin1")``), and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("it encodes text in a way pickled bytes never are")
    return text.encode("latin1")


def _plain(value, depth: int = 0) -> bool:
    """Whether an unpickled value holds only what a CIFAR batch does: dict, list, str, bytes, int,
    numbers and numpy arrays of numbers (no object arrays)."""
    if depth > 8:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, (str, bytes)) and _plain(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.dtype.kind in "biuf"
    return isinstance(value, (str, bytes, int, float))


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of one pickled batch file."""
    if not path.is_file():
        raise DataError(f"{path.parent}: missing {path.name}; the dataset folder is incomplete, reinstall it or pass --data-dir DIR")
    fix = "the file is corrupt; delete it and reinstall the dataset"
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
        if not isinstance(entry, dict) or not _plain(entry):
            raise pickle.UnpicklingError("it holds something other than a dict of arrays, lists and strings")
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except pickle.UnpicklingError as err:
        raise DataError(f"{path}: not a CIFAR batch ({err}); {fix}") from None
    except (OSError, EOFError, KeyError, TypeError, ValueError, IndexError, AttributeError, MemoryError,
            RecursionError) as err:
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
