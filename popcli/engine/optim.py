"""Optimizers and learning-rate schedules for the search.

The schedule is a pure function of the global step (no scheduler state to checkpoint), so a
resumed run sets exactly the learning rates an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch

from ..methods import optimizer_default
from ..recipe import SearchConfig


def setting(cfg: SearchConfig, key: str):
    """``cfg.<key>`` for an optimizer key, or its method's default when unset (None)."""
    value = getattr(cfg, key)
    return optimizer_default(cfg.method, key, cfg.subspace_dim) if value is None else value


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What the search optimizes: scores (edge-popup), weights of dense layers, nothing frozen."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params: list[torch.nn.Parameter], cfg: SearchConfig) -> torch.optim.Optimizer:
    lr, momentum, decay = setting(cfg, "lr"), setting(cfg, "momentum"), setting(cfg, "weight_decay")
    if setting(cfg, "optimizer") == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=setting(cfg, "nesterov") and momentum > 0,
                               weight_decay=decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=decay)


def learning_rate(cfg: SearchConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """LR at 0-based ``step``: linear warm-up to cfg.lr, then cosine to 0 (or constant)."""
    warmup, lr = int(round(cfg.warmup_epochs * steps_per_epoch)), setting(cfg, "lr")
    if step < warmup:
        return lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return lr
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
