"""The first images of a recipe's dataset, as a deployment check or a latency run needs them.

``real_inputs(recipe, data_dir, test=N, train=M)`` loads the recipe's data (un-augmented) and
returns the first N test images with their labels and the first M training images: what the
ONNX parity check, int8 calibration and ``popcli eval`` run on. A ``data.data_dir`` stored in an
artifact that no longer holds the data (moved, another machine) falls back to the usual search
(it was the search's choice, not this command's); ``data_dir`` given here is the only place looked.
"""

from __future__ import annotations

import copy

import torch

from .load import load_data
from .resolve import in_root


def _take(loader, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, got = [], [], 0
    for x, y in loader.batches():
        xs.append(x)
        ys.append(y)
        got += len(y)
        if got >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def real_inputs(recipe, data_dir: str | None, *, test: int, train: int = 0) -> tuple[torch.Tensor, torch.Tensor,
                                                                                     torch.Tensor]:
    """(first ``test`` test images [N, C, H, W], their labels [N], first ``train`` un-augmented
    training images [M, C, H, W]) of ``recipe``'s data (a ``popcli.recipe.Recipe``)."""
    data = copy.deepcopy(recipe.data)
    data.augment = False
    if data_dir:
        data.data_dir = data_dir
    elif data.data_dir and data.dataset != "synthetic" and in_root(data.dataset, data.data_dir) is None:
        data.data_dir = None
    splits = load_data(data, recipe.seed)
    x_test, y_test = _take(splits.test, test)
    x_train = _take(splits.train, train)[0] if train else torch.zeros(0)
    return x_test, y_test, x_train
