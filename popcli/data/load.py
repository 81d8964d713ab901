"""``load_data``: a DataConfig + seed -> train / val / test loaders and a DatasetInfo.

Picks the reader (IDX, CIFAR batches, synthetic, ImageFolder), finds or downloads the folder
(``resolve``), holds out ``val_fraction`` of train with a split drawn from
``torch_generator(seed, "val_split")``, and builds the loaders with the dataset's normalization
constants and standard augmentation (``data.augment`` forces it on or off).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import EXIT_USAGE, DataError
from ..recipe import DataConfig
from ..rng import torch_generator
from .base import DatasetInfo, Splits
from .facts import DATASETS, FACTS
from .folders import read_cifar_folder
from .idx import read_mnist_folder
from .memory import Augment, TensorLoader
from .resolve import find_dataset, not_found, user_cache
from .synthetic import make_synthetic

# (default augmentation, what augment=true means); CIFAR: crop 32 with padding 4 + flip.
AUGMENTS = {
    "fashion-mnist": (Augment(), Augment(pad=2)),
    "mnist": (Augment(), Augment(pad=2)),
    "cifar10": (Augment(pad=4, flip=True), Augment(pad=4, flip=True)),
    "cifar100": (Augment(pad=4, flip=True), Augment(pad=4, flip=True)),
    "synthetic": (Augment(), Augment(pad=2)),
}
_TORCHVISION = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


class UnknownDataset(DataError):
    """data.dataset names no dataset popcli reads: a recipe mistake (exit 2)."""

    exit_code = EXIT_USAGE


def _download(name: str, data_dir: str | None) -> None:
    """Let torchvision fetch ``name`` into ``data_dir`` or else the user cache (its own layout,
    found by ``resolve``)."""
    import torchvision.datasets

    root = Path(data_dir).expanduser() if data_dir else user_cache()
    try:
        root.mkdir(parents=True, exist_ok=True)
        getattr(torchvision.datasets, _TORCHVISION[name])(str(root), train=True, download=True)
        getattr(torchvision.datasets, _TORCHVISION[name])(str(root), train=False, download=True)
    except Exception as err:  # network, disk, checksum: all end as one actionable line
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise DataError(f"downloading {name} into {root} failed ({first}); check the network, or pass --data-dir DIR with the files") from None


def locate(cfg: DataConfig) -> Path:
    """The dataset folder: found locally, else downloaded when ``data.download`` allows, else DataError."""
    folder = find_dataset(cfg.dataset, cfg.data_dir)
    if folder is None and cfg.download and cfg.dataset != "imagenet":
        _download(cfg.dataset, cfg.data_dir)
        folder = find_dataset(cfg.dataset, cfg.data_dir)
    if folder is None:
        raise not_found(cfg.dataset, cfg.data_dir)
    return folder


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(train indices, val indices or None), both sorted; val is round(n * fraction) samples (>= 1)."""
    if fraction <= 0:
        return torch.arange(n), None
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise DataError(f"data.val_fraction={fraction} leaves no training samples out of {n}; lower data.val_fraction")
    perm = torch.randperm(n, generator=torch_generator(seed, "val_split"))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _read(cfg: DataConfig, seed: int) -> tuple[tuple[torch.Tensor, ...], str, int]:
    """((train_x, train_y, test_x, test_y), source, num_classes) of an in-memory dataset."""
    if cfg.dataset == "synthetic":
        shape = tuple(int(s) for s in cfg.shape)
        arrays = make_synthetic(seed, shape, cfg.num_classes, cfg.train_size, cfg.test_size)
        return arrays, "synthetic", cfg.num_classes
    folder = locate(cfg)
    classes = FACTS[cfg.dataset].num_classes
    if cfg.dataset in ("fashion-mnist", "mnist"):
        return read_mnist_folder(folder, classes), str(folder), classes
    return read_cifar_folder(cfg.dataset, folder), str(folder), classes


def permutation(seed: int, task: int, pixels: int) -> torch.Tensor:
    """The pixel permutation of permuted-dataset task ``task`` (SupSup's PermutedMNIST): the stable
    argsort of ``pixels`` words of the portable generator's stream (seed, "permute/<task>"), so
    the same on every machine and torch version."""
    import numpy as np

    from ..rng import uint32_stream

    return torch.from_numpy(np.argsort(uint32_stream(seed, f"permute/{task}", pixels), kind="stable"))


def _permuted(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Images [N, C, H, W] with their H*W pixel positions reordered (the same order in every channel)."""
    return x.flatten(2)[:, :, order].reshape(x.shape)


def _in_memory(cfg: DataConfig, seed: int, device: torch.device | str) -> Splits:
    if cfg.dataset == "imagefolder":  # the user's folders: class names and stats come with the images
        from .imagefolder import read_image_folder

        (train_x, train_y, test_x, test_y), names, (mean, std), source = read_image_folder(cfg, seed)
        num_classes, class_names, known_stats = len(names), tuple(names), True
        pad = max(1, cfg.image_size // 8)
        default = forced = Augment(pad=pad, flip=True)
    else:
        (train_x, train_y, test_x, test_y), source, num_classes = _read(cfg, seed)
        channels = train_x.shape[1]
        facts = FACTS.get(cfg.dataset)  # None: synthetic, already standardized
        known_stats, class_names = facts is not None, facts.class_names if facts else None
        mean, std = (facts.mean, facts.std) if facts else ((0.0,) * channels, (1.0,) * channels)
        default, forced = AUGMENTS[cfg.dataset]
    if cfg.permute_task is not None:
        order = permutation(seed, cfg.permute_task, train_x.shape[2] * train_x.shape[3])
        train_x, test_x = _permuted(train_x, order), _permuted(test_x, order)
    augment = default if cfg.augment is None else (forced if cfg.augment else Augment())
    train_idx, val_idx = split_indices(train_x.shape[0], cfg.val_fraction, seed)
    val = None
    if val_idx is not None:
        val = TensorLoader(train_x[val_idx], train_y[val_idx], cfg.eval_batch_size, mean, std, train=False, seed=seed, device=device)
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    train = TensorLoader(train_x, train_y, cfg.batch_size, mean, std, train=True, seed=seed, augment=augment, device=device)
    test = TensorLoader(test_x, test_y, cfg.eval_batch_size, mean, std, train=False, seed=seed, device=device)
    info = DatasetInfo(cfg.dataset, tuple(train_x.shape[1:]), num_classes, train.num_samples,
                       val.num_samples if val else 0, test.num_samples, source, *((mean, std) if known_stats else
                                                                                  (None, None)), class_names)
    return Splits(train, val, test, info)


def _imagenet(cfg: DataConfig, seed: int, device: torch.device | str) -> Splits:
    from .imagenet import ImageFolderLoader, image_folder  # torchvision import only when needed

    folder = locate(cfg)
    train_set, test_set = image_folder(folder / "train"), image_folder(folder / "val")
    if train_set.classes != test_set.classes:
        raise DataError(f"{folder}: train/ has {len(train_set.classes)} classes but val/ has {len(test_set.classes)} (or different names); make their class folders match")
    train_idx, val_idx = split_indices(len(train_set), cfg.val_fraction, seed)
    augment = cfg.augment is not False
    common = dict(seed=seed, image_size=cfg.image_size, workers=cfg.workers, device=device)
    train = ImageFolderLoader(train_set, train_idx.tolist(), cfg.batch_size, train=True, augment=augment, **common)
    val = None if val_idx is None else ImageFolderLoader(train_set, val_idx.tolist(), cfg.eval_batch_size, train=False, augment=False, **common)
    test = ImageFolderLoader(test_set, list(range(len(test_set))), cfg.eval_batch_size, train=False, augment=False, **common)
    info = DatasetInfo("imagenet", (3, cfg.image_size, cfg.image_size), len(train_set.classes), train.num_samples,
                       val.num_samples if val else 0, test.num_samples, str(folder), FACTS["imagenet"].mean,
                       FACTS["imagenet"].std, tuple(train_set.classes))
    return Splits(train, val, test, info)


def load_data(cfg: DataConfig, seed: int, device: torch.device | str = "cpu", shard: tuple[int, int] = (0, 1)) -> Splits:
    """Train / val / test loaders for ``cfg.dataset``; val is None unless ``cfg.val_fraction > 0``.
    ``shard`` = (rank, world) under torch.distributed (see ``Loader.set_shard``)."""
    if cfg.dataset == "user":  # popcli.search(model, your_dataset, ...): the data lives in the user's code
        raise DataError("this recipe was searched on your own Dataset (data.dataset: user), which popcli cannot "
                        "load by name; run popcli.load(artifact) on your own data, or pass a named dataset")
    if cfg.dataset not in DATASETS:
        raise UnknownDataset(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)} (set data.dataset=NAME)")
    splits = _imagenet(cfg, seed, device) if cfg.dataset == "imagenet" else _in_memory(cfg, seed, device)
    for loader in (splits.train, splits.val, splits.test):
        if loader is not None:
            loader.set_shard(*shard)
    return splits
