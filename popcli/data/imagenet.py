"""ImageNet (or any ImageFolder tree with train/ and val/) streamed from disk by a torch DataLoader.

Train: RandomResizedCrop(image_size) + horizontal flip; eval: Resize(image_size * 256 // 224) +
CenterCrop(image_size); both ToTensor + ImageNet mean/std. Determinism for resume: the sample
order is ``randperm`` from ``torch_generator(seed, "order", epoch)`` and each sample's crop/flip
draws come from its own ``torch_generator(seed, "augment", epoch, step, slot)``, so a batch does
not depend on which worker decodes it or where the epoch was resumed. Global RNGs are untouched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from ..errors import DataError
from ..rng import torch_generator
from .facts import FACTS
from .base import Loader
from .imagefolder import check_class_names, open_image

MEAN, STD = FACTS["imagenet"].mean, FACTS["imagenet"].std
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop defaults


def crop_params(height: int, width: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop.get_params, drawing from ``gen``."""
    area, log_lo, log_hi = height * width, math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        target = area * torch.empty(1).uniform_(SCALE[0], SCALE[1], generator=gen).item()
        aspect = math.exp(torch.empty(1).uniform_(log_lo, log_hi, generator=gen).item())
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    ratio = width / height  # fallback: the largest centered crop with an allowed aspect ratio
    w, h = width, height
    if ratio < RATIO[0]:
        h = round(w / RATIO[0])
    elif ratio > RATIO[1]:
        w = round(h * RATIO[1])
    return (height - h) // 2, (width - w) // 2, h, w


class SeededImages(Dataset):
    """Items keyed by (index, draw), draw = (seed, epoch, step, slot) for augmentation or None."""

    def __init__(self, folder: ImageFolder, indices: list[int], image_size: int):
        self.folder, self.indices, self.size = folder, indices, image_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, tuple | None]) -> tuple[torch.Tensor, int]:
        index, draw = key
        path, label = self.folder.samples[self.indices[index]]
        with open_image(Path(path)) as opened:  # decompression bombs, extreme shapes: one DataError
            img = opened.convert("RGB")
        if draw is None:
            img = TF.center_crop(TF.resize(img, self.size * 256 // 224), self.size)
        else:
            gen = torch_generator(*draw)
            top, left, h, w = crop_params(img.height, img.width, gen)
            img = TF.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
            if torch.rand(1, generator=gen).item() < 0.5:
                img = TF.hflip(img)
        return TF.normalize(TF.to_tensor(img), MEAN, STD), label


def image_folder(path: Path) -> ImageFolder:
    try:
        folder = ImageFolder(str(path))
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"{path}: not an image-class folder tree ({err}); it needs one sub-folder of images per class") from None
    check_class_names(path, folder.classes)  # before the search starts, not when an export writes them
    return folder


class ImageFolderLoader(Loader):
    """Batches of an ImageFolder subset, decoded by ``workers`` processes (pinned memory on CUDA)."""

    def __init__(self, folder: ImageFolder, indices: list[int], batch_size: int, *, train: bool, augment: bool,
                 seed: int, image_size: int, workers: int, device: torch.device | str = "cpu"):
        if not indices:
            raise DataError(f"{folder.root}: no images in this split; check the dataset folder and data.val_fraction")
        self.dataset = SeededImages(folder, indices, image_size)
        self.batch_size, self.num_samples = int(batch_size), len(indices)
        self.train, self.augment, self.seed = train, augment and train, seed
        self.workers, self.device = workers, torch.device(device)

    def _keys(self, epoch: int, start_step: int) -> list[list[tuple[int, tuple | None]]]:
        """Per batch, the (index, draw) keys of its samples, for steps start_step.. of ``epoch``."""
        n, size = self.num_samples, self.batch_size
        order = torch.randperm(n, generator=torch_generator(self.seed, "order", epoch)).tolist() if self.train else range(n)
        keys = []
        for step in range(start_step, len(self)):
            if self._mine(step):
                lo, hi = step * size, min((step + 1) * size, n)
                keys.append(self._local([(order[k], (self.seed, "augment", epoch, step, k - lo) if self.augment else None)
                                         for k in range(lo, hi)]))
        return keys

    def batches(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._check_position(epoch, start_step)
        loader = DataLoader(self.dataset, batch_sampler=self._keys(epoch, start_step), num_workers=self.workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch_generator(self.seed, "workers", epoch))  # not the global RNG
        try:
            for x, y in loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        except DataError as err:  # re-raised from a worker with its traceback: keep the last line
            raise DataError(str(err).strip().splitlines()[-1].removeprefix("popcli.errors.DataError: ")) from None
