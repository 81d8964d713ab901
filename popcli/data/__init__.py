"""Datasets and loaders: ``load_data(cfg, seed, device) -> Splits(train, val, test, info)``.

Modules: ``facts`` (what popcli knows of each named dataset: shape, classes, normalization,
class names), ``base`` (the API types), ``resolve`` (finding folders), ``idx`` (MNIST IDX files),
``folders`` (CIFAR batches), ``synthetic`` (the test task), ``memory`` (in-memory loaders and
batch-wise augmentation), ``imagenet`` (ImageFolder + DataLoader), ``imagefolder`` (a user's
class folders), ``user`` (a user's own Dataset), ``load`` (putting it together), ``sample``
(the first images of a recipe's data), ``preprocessing`` (the data config a model carries). Imports ``errors``, ``rng`` and ``recipe``.
"""

from .base import DatasetInfo, Loader, Splits
from .facts import DATASETS
from .load import load_data

__all__ = ["DATASETS", "DatasetInfo", "Loader", "Splits", "load_data"]
