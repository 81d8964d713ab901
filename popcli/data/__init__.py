"""Datasets and loaders: ``load_data(cfg, seed, device) -> Splits(train, val, test, info)``.

Modules: ``base`` (the API types), ``resolve`` (finding folders), ``idx`` (MNIST IDX files),
``folders`` (CIFAR batches), ``synthetic`` (the test task), ``memory`` (in-memory loaders and
batch-wise augmentation), ``imagenet`` (ImageFolder + DataLoader), ``load`` (putting it together).
"""

from __future__ import annotations

from .base import DATASETS, DatasetInfo, Loader, Splits
from .load import load_data

__all__ = ["DATASETS", "DatasetInfo", "Loader", "Splits", "load_data"]
