"""A small learnable synthetic task generated from the seed (for tests and benchmarks only).

Each class has a smooth random prototype image (low-resolution Gaussian noise upsampled
bilinearly, unit variance); a sample is its class prototype plus white Gaussian noise. Labels are
balanced. Train and test are independent draws from the same distribution, so accuracy on test
measures learning. Values are already roughly zero-mean and unit-variance (mean 0, std 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..rng import torch_generator

NOISE_STD = 1.0  # per-pixel noise; prototypes have unit std, so classes separate over many pixels


def prototypes(seed: int, shape: tuple[int, int, int], num_classes: int) -> torch.Tensor:
    """Class prototypes float32 [K, C, H, W], smooth (so small convnets find them) and unit-std."""
    c, h, w = shape
    gen = torch_generator(seed, "synthetic", "prototypes")
    low = torch.randn(num_classes, c, max(1, h // 4), max(1, w // 4), generator=gen)
    protos = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return protos / protos.std().clamp_min(1e-6)


def make_split(seed: int, split: str, size: int, protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x float32 [N, C, H, W], y int64 [N]) for ``split`` ("train" or "test")."""
    gen = torch_generator(seed, "synthetic", split)
    k = protos.shape[0]
    labels = (torch.arange(size) % k)[torch.randperm(size, generator=gen)]  # balanced classes
    noise = torch.randn((size, *protos.shape[1:]), generator=gen)
    return protos[labels] + NOISE_STD * noise, labels


def make_synthetic(seed: int, shape: tuple[int, int, int], num_classes: int, train_size: int, test_size: int):
    """(train_x, train_y, test_x, test_y), all CPU tensors, a pure function of the arguments."""
    protos = prototypes(seed, shape, num_classes)
    train_x, train_y = make_split(seed, "train", train_size, protos)
    test_x, test_y = make_split(seed, "test", test_size, protos)
    return train_x, train_y, test_x, test_y
