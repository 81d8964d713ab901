"""In-memory loaders for small datasets (MNISTs, CIFAR, synthetic), with batch-wise augmentation.

The whole split sits on the target device as uint8 [N, C, H, W] (float32 for synthetic); each
batch is gathered, augmented with tensor ops (no per-image Python loop) and normalized with
per-channel constants. Train order is ``randperm`` from ``torch_generator(seed, "order", epoch)``;
augmentation draws come from ``torch_generator(seed, "augment", epoch, step)`` per batch, on the
CPU, so a batch depends only on (seed, epoch, step) and resuming skips batches without computing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..errors import DataError
from ..rng import torch_generator
from .base import Loader


@dataclass(frozen=True)
class Augment:
    """Random crop back to (H, W) after zero padding ``pad`` pixels per side, plus optional h-flip."""

    pad: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip


def crop_flip(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """x [B, C, H, W] (any dtype) -> randomly cropped / flipped [B, C, H, W], one gather.

    Padding is zeros in pixel space (before normalization), as torchvision's RandomCrop. Offsets
    (dy, dx) ~ U{0..2*pad} and flips ~ Bernoulli(0.5) are drawn on the CPU from ``gen``.
    """
    b, c, h, w = x.shape
    p = aug.pad
    dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5 if aug.flip else torch.zeros(b, dtype=torch.bool)
    if p:
        x = F.pad(x, (p, p, p, p))
    rows = dy[:, None] + torch.arange(h)  # [B, H]
    ar = torch.arange(w)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar, ar)  # [B, W]; flip reverses columns
    flat = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).reshape(b, 1, h * w)  # [B, 1, H*W]
    flat = flat.to(x.device).expand(b, c, h * w)
    return x.reshape(b, c, -1).gather(2, flat).reshape(b, c, h, w)


class TensorLoader(Loader):
    """Batches of an in-memory split. ``train`` shuffles, drops a last partial batch and augments."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        train: bool,
        seed: int,
        augment: Augment = Augment(),
        device: torch.device | str = "cpu",
    ):
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise DataError(f"a split needs as many labels as images and at least one sample, got {images.shape[0]} images, {labels.shape[0]} labels; check data sizes")
        self.device = torch.device(device)
        self.images = images.to(self.device)  # [N, C, H, W] uint8 (pixels 0..255) or float32
        self.labels = labels.to(self.device, torch.int64)  # [N]
        self.batch_size, self.num_samples = int(batch_size), int(images.shape[0])
        self.train, self.seed = train, seed
        self.augment = augment if train else Augment()
        # x_norm = x * scale - shift == (x / 255 - mean) / std, per channel, shapes [1, C, 1, 1].
        unit = 255.0 if images.dtype == torch.uint8 else 1.0
        std_t = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self._scale = (1.0 / (unit * std_t)).to(self.device)
        self._shift = (mean_t / std_t).to(self.device)

    def _order(self, epoch: int) -> torch.Tensor | None:
        if not self.train:
            return None
        perm = torch.randperm(self.num_samples, generator=torch_generator(self.seed, "order", epoch))
        return perm.to(self.device)

    indexed = True

    def batches(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y, _ in self.indexed_batches(epoch, start_step):
            yield x, y

    def indexed_batches(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]]:
        """(x, y, idx): idx int64 [B] the rows of ``images`` this batch holds (this rank's part)."""
        self._check_position(epoch, start_step)
        order = self._order(epoch)
        size = self.batch_size
        for step in range(start_step, len(self)):
            if not self._mine(step):
                continue
            lo, hi = step * size, min((step + 1) * size, self.num_samples)
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]  # eval: views, in order
                idx = torch.arange(lo, hi, device=self.device)
            else:
                idx = order[lo:hi]
                x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            if self.augment.active:  # drawn for the global batch: every rank count sees the same batches
                x = crop_flip(x, self.augment, torch_generator(self.seed, "augment", epoch, step))
            yield self._local(x).float() * self._scale - self._shift, self._local(y), self._local(idx)

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        return self.images[lo:hi].float() * self._scale - self._shift
