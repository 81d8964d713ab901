"""The search loop: train scores (edge-popup) or weights (dense) and report what was found.

``search(recipe, run_dir)`` is the whole job: ``job.build_job`` (data, model, optimizer) ->
epochs of training steps -> ``evaluate`` -> ``commit.save`` (last.pt, metrics) in ``run_dir``
-> a summary dict. It never prints: the
caller passes ``on_event(kind, info)`` to render progress and ``should_stop()`` to request a
clean stop (Ctrl-C), which checkpoints and raises ``SearchInterrupted``.

Resume is exact on CPU: data order and augmentation are functions of (seed, epoch, step), the
learning rate a function of the global step, and a checkpoint holds the model, optimizer and the
partial epoch's running sums, so a resumed run ends in the same state as an uninterrupted one.

Kill-safety: last.pt is the run's one commit point (``commit``), written at every epoch's end
and every ``search.checkpoint_every_steps`` steps, so a SIGKILL at any moment loses at most that
many steps, and ``--resume`` ends bit-identical to an uninterrupted run (docs/FORMAT.md, "Run
folders"). A ``--resume`` of a run killed before its first checkpoint starts it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..data import Loader, Splits
from ..errors import RunError, SearchInterrupted, TrainingDiverged, in_python
from ..measure import count_correct, keeps_torch_threads
from ..models import count_params, refresh_global_masks, regenerate_weights, set_step
from ..nn import cpu_kernels
from ..recipe import Recipe, dump, resolve
from ..storage import atomic, checkpoint as ckpt, runlock, strict_json
from ..version import __version__
from . import distributed, tb_log
from .commit import derive_from_last, restore, save
from .job import EventHandler, Job, Progress, build_job, normalize
from .optim import learning_rate, set_learning_rate
from .runtime import Runtime

WARMUP_STEPS = 3  # steps left out of step_time_ms (allocator and kernel warm-up)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Loader, runtime: Runtime | None = None,
             dist: distributed.Dist | None = None) -> dict[str, float]:
    """Mean cross-entropy, top-1 accuracy and (more than 5 classes) top-5 accuracy, as fractions,
    of ``model`` over ``loader`` (summed over ranks under torch.distributed, each of which
    evaluates its share)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, correct5, seen, classes = 0.0, 0, 0, 0, 0
    for x, y in loader.batches():
        with runtime.autocast() if runtime else torch.autocast("cpu", enabled=False):
            logits = model(x)
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        hits, hits5 = count_correct(logits, y)  # top-5 only for more than 5 classes (measure)
        correct, correct5, classes = correct + hits, correct5 + (hits5 or 0), logits.shape[1]
        seen += y.numel()
    model.train(was_training)
    if dist is not None:
        loss_sum, correct, correct5, seen, classes = dist.sum([loss_sum, correct, correct5, seen, classes])
        classes = classes / max(1, dist.world)
    result = {"loss": loss_sum / max(1, seen), "acc": correct / max(1, seen)}
    if classes > 5:
        result["top5"] = correct5 / max(1, seen)
    return result


def _train_step(job: Job, x: torch.Tensor, y: torch.Tensor,
                idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step (``idx``: the batch's sample indices, for distillation); returns
    (summed loss, correct count) as tensors (no sync)."""
    cfg = job.recipe.search
    with job.runtime.autocast():
        logits = job.net(x)
        if job.distiller is not None:  # one lookup of the cached teacher logits (engine.distill)
            loss = job.distiller.loss(logits.float(), y, idx, cfg.label_smoothing)
        else:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    job.optimizer.zero_grad(set_to_none=True)
    if job.scaler is not None:
        job.scaler.scale(loss).backward()
        job.scaler.step(job.optimizer)
        job.scaler.update()
    else:
        loss.backward()
        job.optimizer.step()
    return loss.detach() * y.numel(), (logits.detach().argmax(1) == y).sum()


def _check_finite(loss_sum: float, prog: Progress, cfg_lr: float) -> None:
    if not math.isfinite(loss_sum):
        raise TrainingDiverged(f"loss became {loss_sum} at epoch {prog.epoch + 1}, step {prog.global_step}; "
                               f"lower search.lr (now {cfg_lr}) or check the data; last good checkpoint kept")


def _checkpoint_due(every: int | None, prog: Progress, steps: int, total_steps: int) -> bool:
    """``search.checkpoint_every_steps``: commit last.pt after this step (the epoch's end and the
    last step commit anyway, with the evaluation)."""
    return bool(every) and prog.global_step % every == 0 and prog.step_in_epoch < steps \
        and prog.global_step < total_steps


def _run_epoch(job: Job, prog: Progress) -> bool:
    """Train from ``prog``'s position to the end of the epoch (or a stop). True if the epoch ended."""
    cfg, train = job.recipe.search, job.splits.train
    steps = len(train)
    job.model.train()
    batches = (train.indexed_batches(prog.epoch, prog.step_in_epoch) if job.distiller is not None
               else ((x, y, None) for x, y in train.batches(prog.epoch, prog.step_in_epoch)))
    for x, y, idx in batches:
        if prog.global_step >= job.total_steps:
            return False
        start = time.perf_counter()
        set_learning_rate(job.optimizer, learning_rate(cfg, prog.global_step, job.total_steps, steps))
        set_step(job.model, prog.global_step)  # the supermask draws of this step
        loss_sum, correct = _train_step(job, x, y) if idx is None else _train_step(job, x, y, idx)
        # one sync per step (NaN check, progress); under torch.distributed an all-reduce makes
        # every rank see the global batch's figures
        loss_value, hits, count = job.dist.sum([float(loss_sum), float(correct), y.numel()])
        _check_finite(loss_value, prog, cfg.lr)
        if job.iterand is not None:  # IteRand: after every K-th step, re-draw pruned weights (timed with the step)
            refresh_global_masks(job.model)
            job.iterand.after_step(job.model, prog.global_step + 1)
        prog.step_times.append(time.perf_counter() - start)
        prog.loss_sum += loss_value
        prog.correct += int(hits)
        prog.seen += int(count)
        prog.global_step += 1
        prog.step_in_epoch += 1
        job.on_event("step", {"epoch": prog.epoch, "step": prog.global_step, "total_steps": job.total_steps,
                              "loss": loss_value / count, "acc": prog.correct / prog.seen,
                              "images_per_s": count / prog.step_times[-1], "lr": job.optimizer.param_groups[0]["lr"]})
        stop = job.dist.any(job.should_stop())  # a Ctrl-C on any rank stops every rank at this step
        if stop or _checkpoint_due(cfg.checkpoint_every_steps, prog, steps, job.total_steps):
            save(job, prog)  # mid-epoch: the running sums and position, so a resume continues exactly here
        if stop:
            how = (f"popcli.search(..., run_dir={str(job.run_dir)!r}, resume=True)" if in_python()
                   else f"popcli search --resume --out {job.run_dir}")
            raise SearchInterrupted(f"stopped at step {prog.global_step}; checkpoint saved. Resume with: {how}")
    return prog.step_in_epoch >= steps


def _end_epoch(job: Job, prog: Progress, epoch_start: float, complete: bool) -> dict[str, Any]:
    """Evaluate, commit last.pt (with the new metrics line), then metrics.jsonl and best.pt;
    a complete epoch advances ``prog``.

    An incomplete one (search.max_steps hit mid-epoch) keeps its position so a resume that
    raises max_steps continues the same epoch.
    """
    record: dict[str, Any] = {
        "epoch": prog.epoch + 1, "step": prog.global_step, "complete": complete,
        "lr": job.optimizer.param_groups[0]["lr"],
        "train_loss": prog.loss_sum / max(1, prog.seen), "train_acc": prog.correct / max(1, prog.seen),
    }
    if job.splits.val is not None:
        record["val_acc"] = evaluate(job.model, job.splits.val, job.runtime, job.dist)["acc"]
    test = evaluate(job.model, job.splits.test, job.runtime, job.dist)
    record.update(test_loss=test["loss"], test_acc=test["acc"], epoch_time_s=time.perf_counter() - epoch_start)
    if "top5" in test:
        record["test_top5"] = test["top5"]
    job.last_metrics = record
    job.metrics_lines.append(strict_json.dumps(record))
    if complete:
        prog.epoch, prog.step_in_epoch = prog.epoch + 1, 0
        prog.loss_sum, prog.correct, prog.seen = 0.0, 0, 0
    selection = record.get("val_acc", record["test_acc"])
    if selection > prog.best_acc:
        prog.best_acc, prog.best_step = selection, prog.global_step
    save(job, prog)  # the commit point; what follows is re-derived from it on resume
    if job.dist.main:
        derive_from_last(job, prog.best_step == prog.global_step)
    job.on_event("epoch", record)
    return record


def _verify_weights(job: Job) -> bool:
    """Edge-popup's promise: every masked weight still equals a fresh regeneration, bit for bit."""
    if job.recipe.search.method == "dense":
        return False
    fresh = regenerate_weights(job.model, job.recipe.seed, job.recipe.model.init, job.recipe.search.density)
    modules = dict(job.model.named_modules())
    for name, weight in fresh.items():
        if not torch.equal(modules[name].weight.detach().cpu(), weight):
            raise RunError(f"weight of layer {name!r} changed during the search; this is a popcli bug, please report it")
    return True


def _summary(job: Job, prog: Progress, final: dict[str, Any]) -> dict[str, Any]:
    recipe, info = job.recipe, job.splits.info
    total, kept = count_params(job.model)
    timed = prog.step_times[WARMUP_STEPS:] or prog.step_times
    step_s = statistics.median(timed) if timed else None  # None: no step ran in this session
    schedule = getattr(job.model, "_popcli_density_schedule", None)
    reached = {} if schedule is None or schedule.current is None else {"density_reached": schedule.current}
    return {**reached,
        "test_acc": final["test_acc"], "test_top5": final.get("test_top5"), "test_loss": final["test_loss"],
        "val_acc": final.get("val_acc"),
        # dense training keeps every weight: its density is 1, whatever the recipe's unused value
        "params_total": total, "params_kept": kept,
        "density": 1.0 if recipe.search.method == "dense" else recipe.search.density,
        "kept_fraction": kept / total if total else 1.0,
        "seed": recipe.seed, "method": recipe.search.method, "arch": recipe.model.arch,
        "init": recipe.model.init, "dataset": info.name, "data_folder": info.source,
        "train_size": info.train_size, "val_size": info.val_size, "test_size": info.test_size, "epochs": prog.global_step / max(1, len(job.splits.train)),
        "steps": prog.global_step,
        "step_time_ms": step_s * 1e3 if step_s else None,
        "images_per_s": recipe.data.batch_size / step_s if step_s else None,
        "wall_s": job.wall_s(), "session_wall_s": time.perf_counter() - job.started,  # all sessions; this one
        **job.runtime.fields(), "world_size": job.dist.world,
        "weights_verified": _verify_weights(job),
        "cpu_kernels": cpu_kernels.status() if job.runtime.device.type == "cpu" else None,
        "run_dir": str(job.run_dir), "popcli_version": __version__,
        **({"distill_teacher": job.distiller.source, "distill_teacher_sha256": job.distiller.sha256}
           if job.distiller is not None else {}),
    }


@keeps_torch_threads
def search(recipe: Recipe, run_dir: str | Path, *, resume: bool = False, force: bool = False,
           on_event: EventHandler | None = None, should_stop: Callable[[], bool] | None = None,
           user_model: torch.nn.Module | None = None,
           user_data: Callable[[torch.device], Splits] | None = None,
           load_artifact: Callable[[Path], torch.nn.Module] | None = None) -> dict[str, Any]:
    """Run (or resume) a search into ``run_dir`` and return its summary (also in summary.json).
    ``user_model``/``user_data``: the caller's model and loaders instead of the recipe's (see
    ``engine.api``, which builds them and the recipe describing them). ``load_artifact``: how an
    artifact teacher (``search.distill_teacher``) is loaded, ``popcli.load`` (the engine does not
    import the artifact layer)."""
    started = time.perf_counter()
    normalize(resolve(recipe))  # unset optimizer keys: the method's defaults; arch alias, data_dir absolute
    run_dir = Path(run_dir)
    main = int(os.environ.get("RANK", "0")) == 0  # rank 0 owns the run folder
    lock = runlock.RunLock(run_dir).acquire() if main else None
    close_log = lambda: None  # noqa: E731
    try:
        found = ckpt.check_run_dir(run_dir, resume=resume, force=force) if main else True
        # everything that can fail on a bad recipe, data or model happens before the old run is replaced
        job = build_job(recipe, run_dir, on_event or (lambda kind, info: None), should_stop or (lambda: False),
                         user_model, user_data, load_artifact)
        if resume and not job.dist.broadcast(found):  # killed before its first checkpoint: start it
            job.on_event("nothing_to_resume", {"run_dir": str(run_dir)})
            resume = False
        if main:
            job.on_event, close_log = tb_log.attach(recipe, run_dir, job.on_event)  # a missing package: before any change
            ckpt.start_run_dir(run_dir, resume=resume, force=force)
        job.started = started  # the session began before the job was built
        summary = _run(job, resume)
    except BaseException:
        distributed.teardown()  # torchrun: leave the process group, whatever the other ranks do
        raise
    finally:
        close_log()
        if lock is not None:
            lock.release()
    job.dist.barrier()  # every rank finished its collectives before any leaves the group
    distributed.teardown()
    return summary


def _final_metrics(job: Job) -> dict[str, Any]:
    """test_acc / test_loss (/ val_acc) of the model as it stands."""
    test = evaluate(job.model, job.splits.test, job.runtime, job.dist)
    final = {"test_acc": test["acc"], "test_top5": test.get("top5"), "test_loss": test["loss"]}
    if job.splits.val is not None:
        final["val_acc"] = evaluate(job.model, job.splits.val, job.runtime, job.dist)["acc"]
    return final


def _finished_summary(job: Job, prog: Progress) -> dict[str, Any] | None:
    """The saved summary when ``--resume`` finds nothing left to run (the run folder is left as
    it is: a resume never replaces a summary with a poorer one); None when there is work."""
    if prog.global_step < job.total_steps:
        return None
    try:
        return json.loads((job.run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None  # finished but its summary is missing or damaged: _run evaluates and rewrites it


def _run(job: Job, resume: bool) -> dict[str, Any]:
    """The body of ``search``: epochs, checkpoints, summary."""
    recipe, run_dir = job.recipe, job.run_dir
    prog = Progress()
    if resume:
        restore(job, prog)
        finished = _finished_summary(job, prog)
        if finished is not None:
            job.on_event("finished_already", finished)
            return finished
    if job.dist.main:
        atomic.atomic_write_text(run_dir / "recipe.yaml", dump(recipe), kept="nothing else was changed")
    job.on_event("start", {"total_steps": job.total_steps, "step": prog.global_step, "steps_per_epoch": len(job.splits.train),
                           "epochs": recipe.search.epochs, "device": job.runtime.describe(), "data": job.splits.info})
    final: dict[str, Any] | None = None
    while prog.global_step < job.total_steps:
        epoch_start = time.perf_counter()
        ended = _run_epoch(job, prog)
        if ended or prog.global_step >= job.total_steps:
            final = _end_epoch(job, prog, epoch_start, complete=ended)
    if final is None and job.last_metrics.get("step") == prog.global_step:  # finished, summary.json gone
        final = job.last_metrics
    if final is None:  # zero steps: evaluate what is there
        final = _final_metrics(job)
    summary = _summary(job, prog, final)
    if job.dist.main:
        atomic.atomic_write_text(run_dir / "summary.json", strict_json.dumps(summary, indent=2) + "\n")
    job.on_event("done", summary)
    return summary
