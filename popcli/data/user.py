"""The user's own data as popcli loaders: a map-style ``torch.utils.data.Dataset`` or a ``DataLoader``.

``DatasetLoader`` batches a Dataset the way popcli batches its own data: the train order is
``randperm`` from ``torch_generator(seed, "order", epoch)``, eval keeps the index order, and
resuming at (epoch, step) asks only for the batches that remain, so a resume is exact as long
as ``dataset[i]`` is a pure function of ``i`` (random transforms drawn from torch's global RNG,
or worker-seeded ones, are not). ``DataLoaderLoader`` takes the user's DataLoader as it is: its
own sampler decides the order, and a resume re-reads and skips the batches already done, so it
is exact only when that DataLoader yields the same batches every time it is iterated (no
shuffle, or a ``generator`` the user re-seeds). Items are ``(x [C, H, W] float, int label)``;
batches come out as float32 [B, C, H, W] and int64 [B] on the loader's device, labels checked
against the model's class count. popcli does not normalize user data: the user's transforms do
(the mean and std the model was given are recorded for deployment). Neither loader splits over torchrun processes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..errors import DataError
from ..rng import torch_generator
from .base import DatasetInfo, Loader


def _batch(batch: Any, device: torch.device, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x float32 [B, C, H, W], y int64 [B]) on ``device`` from a collated (x, y) batch; labels
    checked to lie in [0, num_classes) (on the CPU, before the copy: no device sync)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and torch.is_tensor(batch[0])
            and torch.is_tensor(batch[1])):
        raise DataError(f"the data yields {type(batch).__name__} batches; popcli needs (images, labels) pairs: "
                        f"items (tensor [C, H, W], int label) of a Dataset, or batches (tensor [B, C, H, W], tensor [B])")
    x, y = batch[0], batch[1]
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or y.dtype.is_floating_point:
        raise DataError(f"a batch of images {list(x.shape)} with labels {list(y.shape)} ({y.dtype}): popcli needs "
                        f"images [B, C, H, W] and integer class labels [B]")
    if num_classes is not None and len(y) and y.device.type == "cpu":
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise DataError(f"label {bad} is outside 0..{num_classes - 1}: the model has num_classes={num_classes} "
                            f"(its output width); relabel the data as 0..K-1 or build the model with more classes")
    return x.to(device, torch.float32, non_blocking=True), y.to(device, torch.int64, non_blocking=True)


def _collated(loader: DataLoader, describe_item: Callable[[], Any]) -> Iterator[Any]:
    """The loader's batches; a batch default_collate cannot make (PIL images, strings) is a DataError
    naming the item type (``describe_item()`` gives the first item)."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except TypeError as err:
            if "collate" not in str(err):
                raise
            raise DataError(_item_problem(describe_item())) from None
        yield batch


def _item_problem(item: Any) -> str:
    """Why ``item`` cannot be a popcli sample, in one line that names the fix."""
    parts = item if isinstance(item, (tuple, list)) else (item,)
    kinds = ", ".join(f"{type(p).__module__.split('.')[0]}.{type(p).__name__}" if type(p).__module__ != "builtins"
                      else type(p).__name__ for p in parts[:2])
    fix = ("add torchvision.transforms.ToTensor() (and Normalize) to the Dataset's transform"
           if any(type(p).__module__.startswith("PIL") for p in parts) else "return (tensor [C, H, W], int label)")
    return f"the Dataset's items are ({kinds}); popcli needs (image tensor [C, H, W], int label): {fix}"


class _UserLoader(Loader):
    def set_shard(self, rank: int, world: int) -> None:
        if world > 1:
            raise DataError("popcli.search with your own Dataset/DataLoader runs in one process; under torchrun use "
                            "a named dataset (data.dataset) or shard your data yourself")


class DatasetLoader(_UserLoader):
    """Batches of a map-style Dataset in popcli's seeded order (exact resume; see the module docstring)."""

    def __init__(self, dataset: Dataset, batch_size: int, *, train: bool, seed: int, workers: int = 0,
                 device: torch.device | str = "cpu", num_classes: int | None = None):
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
            raise DataError(f"{type(dataset).__name__} is not a map-style Dataset (len + indexing); pass it inside a "
                            f"DataLoader instead")
        try:
            self.num_samples = len(dataset)
        except TypeError:
            raise DataError(f"{type(dataset).__name__} has no len(); pass it inside a DataLoader instead") from None
        if self.num_samples == 0:
            raise DataError(f"{type(dataset).__name__} is empty; a split needs at least one sample")
        self.dataset, self.batch_size, self.train, self.seed = dataset, int(batch_size), train, seed
        self.workers, self.device, self.num_classes = workers, torch.device(device), num_classes

    def batches(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._check_position(epoch, start_step)
        n, size = self.num_samples, self.batch_size
        order = torch.randperm(n, generator=torch_generator(self.seed, "order", epoch)).tolist() if self.train else range(n)
        sampler = [list(order[step * size:min((step + 1) * size, n)]) for step in range(start_step, len(self))]
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", generator=torch_generator(self.seed, "workers", epoch))
        for batch in _collated(loader, lambda: self.dataset[sampler[0][0]]):
            yield _batch(batch, self.device, self.num_classes)


class DataLoaderLoader(_UserLoader):
    """The user's DataLoader as it is (its order; resume re-reads and skips; see the module docstring)."""

    def __init__(self, loader: DataLoader, *, train: bool, device: torch.device | str = "cpu",
                 num_classes: int | None = None):
        try:
            self.steps = len(loader)
        except TypeError:
            raise DataError("the DataLoader has no len() (an IterableDataset without __len__); give its Dataset a "
                            "__len__ so that popcli knows the epoch length") from None
        if self.steps == 0:
            raise DataError("the DataLoader yields no batches; check its dataset and drop_last")
        self.loader, self.train, self.device, self.num_classes = loader, train, torch.device(device), num_classes
        self.batch_size = int(loader.batch_size or 1)
        try:
            self.num_samples = len(loader.dataset)
        except TypeError:
            self.num_samples = self.steps * self.batch_size

    def __len__(self) -> int:
        return self.steps

    def batches(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._check_position(epoch, start_step)
        for step, batch in enumerate(_collated(self.loader, lambda: self.loader.dataset[0])):
            if step >= start_step:
                yield _batch(batch, self.device, self.num_classes)


def user_loader(data: Any, *, train: bool, batch_size: int, seed: int, workers: int,
                device: torch.device | str, num_classes: int | None = None) -> Loader:
    """A Loader over a user's Dataset or DataLoader (a popcli Loader passes through); with
    ``num_classes``, every batch's labels are checked to lie in [0, num_classes)."""
    if isinstance(data, Loader):
        return data
    if isinstance(data, DataLoader):
        return DataLoaderLoader(data, train=train, device=device, num_classes=num_classes)
    if isinstance(data, Dataset) or hasattr(data, "__getitem__"):
        return DatasetLoader(data, batch_size, train=train, seed=seed, workers=workers, device=device,
                             num_classes=num_classes)
    raise DataError(f"{type(data).__name__} is neither a torch Dataset nor a DataLoader; pass one of those")


def describe(train: Loader, test: Loader, source: Any, num_classes: int,
             preprocessing: dict[str, Any] | None = None) -> DatasetInfo:
    """The DatasetInfo of user data: the shape of its first batch; mean, std and class names from
    ``preprocessing`` (what the model was given), class names else the data's ``.classes``."""
    x, _ = next(iter(test.batches()))
    given = preprocessing or {}
    classes = getattr(getattr(source, "dataset", source), "classes", None)
    names = tuple(classes) if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes) else None
    names = tuple(given["class_names"]) if given.get("class_names") else names
    mean, std = (tuple(float(v) for v in given[k]) if given.get(k) else None for k in ("mean", "std"))
    return DatasetInfo("user", tuple(int(d) for d in x.shape[1:]), num_classes, train.num_samples, 0, test.num_samples,
                       type(getattr(source, "dataset", source)).__name__, mean, std, names)
