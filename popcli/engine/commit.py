"""The run's one commit point: last.pt, written after every epoch, and what is derived from it.

``save`` writes last.pt (rank 0, after every rank confirmed it holds the same masks): model,
optimizer, progress, recipe, data description, the last metrics record and every metrics line
so far. ``derive_from_last`` then writes metrics.jsonl from those lines and best.pt (a copy of
the last.pt that set a new best); ``restore`` loads last.pt on ``--resume`` and re-derives both,
so a SIGKILL at any moment, then ``--resume``, ends bit-identical to an uninterrupted run
(docs/FORMAT.md, "Run folders").
"""

from __future__ import annotations

from ..methods import iterand
from ..recipe import from_dict
from ..errors import RunError, option
from ..storage import atomic, checkpoint as ckpt
from ..version import __version__
from . import distributed
from .job import Job, Progress, normalize

RESUMABLE_KEYS = ("epochs", "max_steps", "checkpoint_every_steps")  # search keys a resume may change
KEPT = "the last checkpoint is kept (resume with --resume)"


def save(job: Job, prog: Progress) -> None:
    """Write last.pt (rank 0), after every rank confirmed it holds the same masks."""
    job.dist.check_same(distributed.masks_digest(job.model), "masks")
    if not job.dist.main:
        return
    state = {
        "model": job.model.state_dict(),
        "optimizer": job.optimizer.state_dict(),
        "scaler": job.scaler.state_dict() if job.scaler is not None else {},
        "progress": {k: v for k, v in vars(prog).items() if k != "step_times"},
        "recipe": job.recipe.to_dict(),
        "data_info": {"shape": list(job.splits.info.shape), "num_classes": job.splits.info.num_classes,
                      **job.splits.info.preprocessing()},  # + mean, std, class_names (what the artifact records)
        "metrics": dict(job.last_metrics),  # the last epoch's record: what an export reports
        "metrics_lines": list(job.metrics_lines),  # metrics.jsonl as of this checkpoint
        "wall_s": job.wall_s(),  # of every session so far: a resumed run's summary counts them all
        "popcli_version": __version__,
    }
    if job.distiller is not None:  # the teacher file's SHA-256: a resume refuses another teacher
        state["distill"] = job.distiller.record()
    schedule = getattr(job.model, "_popcli_density_schedule", None)
    if schedule is not None and schedule.current is not None:  # the density the masks keep now (an anneal)
        state["density"] = float(schedule.current)
    if job.iterand is not None:  # the draw counters: which draw each (re-drawn) weight holds
        state["iterand"] = iterand.state(job.model)
    ckpt.save_checkpoint(job.run_dir / "last.pt", state, kept=KEPT)
    job.on_event("checkpoint", {"path": str(job.run_dir / "last.pt")})


def derive_from_last(job: Job, new_best: bool) -> None:
    """metrics.jsonl := last.pt's lines; best.pt := last.pt when it set the best (rank 0)."""
    atomic.write_lines(job.run_dir / "metrics.jsonl", job.metrics_lines, kept=KEPT)
    if new_best:
        atomic.copy_atomic(job.run_dir / "last.pt", job.run_dir / "best.pt", kept=KEPT)
        job.on_event("checkpoint", {"path": str(job.run_dir / "best.pt")})


def restore(job: Job, prog: Progress) -> None:
    """Load last.pt on rank 0 and hand it to every rank (no shared filesystem needed)."""
    state = job.dist.broadcast(ckpt.load_checkpoint(job.run_dir / "last.pt", required=ckpt.CHECKPOINT_KEYS)
                               if job.dist.main else None)
    saved = normalize(from_dict(state["recipe"]))  # an older run's alias or relative data_dir: as recorded now
    for section in ("seed", "model", "data", "search"):
        a, b = getattr(saved, section), getattr(job.recipe, section)
        if section == "search":
            a, b = ({k: v for k, v in vars(s).items() if k not in RESUMABLE_KEYS} for s in (a, b))
        if a != b:
            raise RunError(f"the recipe differs from the checkpoint's in {section!r}; only search.epochs, "
                           f"search.max_steps and search.checkpoint_every_steps may change on {option('resume')}")
    if job.distiller is not None:
        job.distiller.check_resumed(state.get("distill"))
    try:
        job.model.load_state_dict(state["model"])
        job.optimizer.load_state_dict(state["optimizer"])
        iterand.restore(job.model, state.get("iterand"))
    except (RuntimeError, ValueError, KeyError) as err:
        raise RunError(f"last.pt does not match this model ({str(err).splitlines()[0]}); start over with "
                       f"{option('force')}") from None
    schedule = getattr(job.model, "_popcli_density_schedule", None)
    if schedule is not None:
        schedule.restore(job.model, state.get("density"))  # the masks as evaluated, until the next step sets its own
    if job.scaler is not None and state.get("scaler"):
        job.scaler.load_state_dict(state["scaler"])
    for key, value in state["progress"].items():
        if key in Progress.__dataclass_fields__:
            setattr(prog, key, value)
    job.last_metrics = state.get("metrics", {})
    job.earlier_wall_s = float(state.get("wall_s") or 0.0)  # checkpoints before 0.3 did not record it
    if "metrics_lines" in state:  # checkpoints before kill-safety: metrics.jsonl is left as it is
        job.metrics_lines = list(state["metrics_lines"])
        if job.dist.main:  # a kill after the commit point: redo what followed it
            derive_from_last(job, prog.best_step == prog.global_step)
