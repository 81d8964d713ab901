"""What one search holds while it runs: its position (``Progress``, saved in every checkpoint) and
its parts (``Job``: recipe, runtime, data, model, optimizer), and ``build_job`` that makes them.

``build_job`` is everything that can fail on a bad recipe, data or model (devices, memory
estimate, data, model, optimizer), so it runs before an old run is replaced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..data import Splits, load_data
from ..errors import PopcliError, RecipeError
from ..methods import iterand as iterative_randomization, schedule as density_schedule
from ..models import build_model, canonical_arch, init_density, input_size
from ..recipe import Recipe
from ..rng import MAX_DRAW
from . import distributed, memory
from .distill import ArtifactLoader, Distiller, build_distiller
from .optim import make_optimizer, trainable_parameters
from .runtime import Runtime, make_runtime

EventHandler = Callable[[str, dict[str, Any]], None]


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0  # current epoch (0-based)
    step_in_epoch: int = 0  # next step to run inside ``epoch``
    global_step: int = 0  # training steps done in total
    loss_sum: float = 0.0  # running sums of the current epoch (sample-weighted)
    correct: int = 0
    seen: int = 0
    best_acc: float = -1.0
    best_step: int = -1  # global_step of the checkpoint that set best_acc (best.pt is a copy of it)
    step_times: list[float] = field(default_factory=list)  # seconds, this session only


@dataclass
class Job:
    recipe: Recipe
    run_dir: Path
    runtime: Runtime
    splits: Splits
    model: torch.nn.Module  # the model itself (state dicts, masks, artifacts)
    net: torch.nn.Module  # what training calls: the model, or it wrapped by DDP / torch.compile
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    total_steps: int
    on_event: EventHandler
    should_stop: Callable[[], bool]
    dist: distributed.Dist = field(default_factory=distributed.Dist)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    metrics_lines: list[str] = field(default_factory=list)  # metrics.jsonl, committed with last.pt
    started: float = field(default_factory=time.perf_counter)  # this session's start (perf_counter)
    earlier_wall_s: float = 0.0  # wall seconds of the sessions before this one, up to their last checkpoint
    distiller: Distiller | None = None  # search.distill_teacher: the cached teacher logits
    iterand: iterative_randomization.IteRand | None = None  # search.iterand_every_steps: the redraw rounds

    def wall_s(self) -> float:
        """Wall seconds of the whole run so far: every earlier session (to its last checkpoint) and this one."""
        return self.earlier_wall_s + time.perf_counter() - self.started


def normalize(recipe: Recipe) -> Recipe:
    """What a run records, in place: the registered name of an old ``model.arch`` alias
    (``resnet50`` -> ``tv_resnet50``), ``data.data_dir`` and ``search.distill_teacher`` as absolute
    paths (a relative one would point elsewhere from another folder: export, eval and resume read
    it back)."""
    recipe.model.arch = canonical_arch(recipe.model.arch)
    if recipe.data.data_dir:
        recipe.data.data_dir = str(Path(recipe.data.data_dir).expanduser().absolute())
    if recipe.search.distill_teacher:  # a resume or export from another folder finds the same teacher
        recipe.search.distill_teacher = str(Path(recipe.search.distill_teacher).expanduser().absolute())
    return recipe


def build_job(recipe: Recipe, run_dir: Path, on_event: EventHandler, should_stop: Callable[[], bool],
               user_model: torch.nn.Module | None = None, user_data: Callable[[torch.device], Splits] | None = None,
               load_artifact: ArtifactLoader | None = None) -> Job:
    """The job of ``recipe``; ``user_model`` / ``user_data(device)`` replace the recipe's (``engine.api``);
    ``load_artifact`` loads an artifact teacher (``engine.distill``)."""
    cfg = recipe.search
    dist, device = distributed.setup(cfg.device)
    runtime = make_runtime(device, cfg.amp, cfg.threads)
    memory.check_data(recipe.data)
    splits = user_data(runtime.device) if user_data else load_data(recipe.data, recipe.seed, runtime.device, dist.shard())
    shape = tuple(splits.info.shape)
    if user_model is None:
        memory.check_model(recipe, shape, splits.info.num_classes, min(recipe.data.batch_size, splits.train.num_samples),
                           runtime.device)
    model = (user_model if user_model is not None else
             build_model(recipe.model, cfg, in_channels=shape[0], image_size=input_size(shape),
                         num_classes=splits.info.num_classes, seed=recipe.seed)).to(runtime.device)
    density_schedule.enable(model, cfg, len(splits.train))  # search.density_schedule: set_step applies it
    if cfg.channels_last and runtime.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    iterand = iterative_randomization.enable(model, cfg, recipe.seed, recipe.model.init, init_density(cfg))
    params = trainable_parameters(model)
    if not params:
        raise PopcliError("nothing to train: the model has no scores or trainable weights")
    net = model
    if dist.world > 1:  # gradients of the scores (and dense weights) all-reduced every step
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[runtime.device.index]
                                                        if runtime.device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    total = cfg.epochs * len(splits.train)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps) if cfg.epochs else cfg.max_steps
    if iterand is not None and total // cfg.iterand_every_steps > MAX_DRAW:
        raise RecipeError(f"search.iterand_every_steps: {cfg.iterand_every_steps} gives {total // cfg.iterand_every_steps} "
                          f"redraw rounds in {total} steps, more than the {MAX_DRAW} a draw counter holds; raise it")
    scaler = torch.amp.GradScaler(runtime.device.type) if runtime.needs_grad_scaler else None
    distiller = build_distiller(cfg, recipe.data, splits, runtime.device, load_artifact)
    return Job(recipe, run_dir, runtime, splits, model, net, make_optimizer(params, cfg), scaler, total,
               on_event if dist.main else (lambda kind, info: None), should_stop, dist, distiller=distiller,
               iterand=iterand)
