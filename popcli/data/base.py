"""The data API shared by every dataset: ``DatasetInfo``, ``Splits`` and the ``Loader`` contract.

A loader yields ``(x, y)`` batches: x float32 [B, C, H, W] already normalized, y int64 [B], both
on the loader's device. ``batches(epoch, start_step)`` is a pure function of (seed, epoch, step):
resuming at (epoch, start_step) reproduces exactly the batches an uninterrupted run would see.
Building loaders lives in ``memory``, ``synthetic`` and ``folders``; this module only defines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import DataError

@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]  # (C, H, W) of one model input
    num_classes: int
    train_size: int
    val_size: int
    test_size: int
    source: str  # the folder it was read from, or "synthetic"
    # Preprocessing a deployment repeats: x = (pixels / 255 - mean) / std per channel (None: inputs used as they are)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None  # label i is class_names[i] (None: not known)

    def preprocessing(self) -> dict:
        """{"mean", "std", "class_names"} as JSON-ready lists (None where not known)."""
        return {"mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None,
                "class_names": list(self.class_names) if self.class_names is not None else None}


class Loader(ABC):
    """Batches of one split. Train loaders shuffle and augment; eval loaders keep order.

    Under torch.distributed (``set_shard(rank, world)``) a train loader yields this rank's slice
    of every global batch (``batch_size`` stays the global batch: the same recipe trains the
    same way on any number of processes), and an eval loader every world-th batch.
    """

    batch_size: int
    num_samples: int
    train: bool
    rank: int = 0
    world: int = 1

    def set_shard(self, rank: int, world: int) -> None:
        if world > 1 and self.train and self.batch_size % world:
            raise DataError(f"data.batch_size={self.batch_size} does not split over {world} processes; use a multiple "
                            f"of {world} (it is the global batch)")
        self.rank, self.world = rank, world

    def _mine(self, step: int) -> bool:
        """Whether this rank evaluates batch ``step`` (eval loaders)."""
        return self.train or step % self.world == self.rank

    def _local(self, rows):
        """This rank's contiguous part of a global batch's rows (train loaders)."""
        if not self.train or self.world == 1:
            return rows
        n = len(rows)
        return rows[n * self.rank // self.world:n * (self.rank + 1) // self.world]

    def __len__(self) -> int:
        """Batches per epoch: train drops a last partial batch if there is a full one."""
        if self.train and self.num_samples >= self.batch_size:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)

    indexed: bool = False  # whether ``indexed_batches`` is available (in-memory splits)

    def indexed_batches(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]]:
        """``batches`` with each row's sample index: (x, y, idx int64 [B]), idx into ``rows``."""
        raise DataError(f"{type(self).__name__} does not know its samples' indices; per-sample tables (search."
                        f"distill_teacher) need an in-memory dataset (mnist, fashion-mnist, cifar10/100, imagefolder, "
                        f"synthetic)")

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Samples ``lo..hi-1`` in storage order, normalized and never augmented: x [hi - lo, C, H, W]."""
        raise DataError(f"{type(self).__name__} cannot read its samples by index; use an in-memory dataset")

    @abstractmethod
    def batches(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start_step, ..., len(self) - 1`` of ``epoch`` (earlier ones are skipped, not computed)."""

    def _check_position(self, epoch: int, start_step: int) -> None:
        if epoch < 0 or start_step < 0:
            raise DataError(f"batches(epoch={epoch}, start_step={start_step}): both must be >= 0; resume from a valid checkpoint")


@dataclass
class Splits:
    train: Loader
    val: Loader | None
    test: Loader
    info: DatasetInfo
