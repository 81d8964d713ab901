"""Run folders and search checkpoints: what a run folder holds, and checkpoints that load safely.

A run folder holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl`` (one line per
epoch), ``last.pt`` / ``best.pt`` (checkpoints) and ``summary.json`` (the final result).
Checkpoints are plain dicts of tensors and numbers written with ``torch.save`` (atomically,
``atomic``) and read back with ``weights_only=True``: no pickled code ever runs on load, and torch's
warnings about a foreign file are not printed before popcli's one-line refusal.
``check_run_dir`` refuses to reuse a folder holding a run (without ``--resume`` or ``--force``);
``start_run_dir`` clears the old run's files once the new run is ready to start.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

from ..errors import RunError, RunExists, option
from .atomic import storage_error, write_atomic

RUN_FILES = ("recipe.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json")
CHECKPOINT_FORMAT = "popcli-checkpoint/1"
CHECKPOINT_KEYS = ("model", "optimizer", "progress", "recipe")  # what a resume cannot do without


def started_files(run_dir: Path) -> list[str]:
    """The run files in ``run_dir``; a folder holding only recipe.yaml never checkpointed (nothing to lose)."""
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    return [] if existing == ["recipe.yaml"] else existing


def check_run_dir(run_dir: Path, *, resume: bool, force: bool) -> bool:
    """Refuse to reuse a folder holding a run unless resuming or forced; nothing is changed.
    Returns whether there is a checkpoint to resume: ``resume`` of a run killed before its first
    checkpoint (a folder holding at most recipe.yaml) is False, a fresh start."""
    run_dir = Path(run_dir)
    if resume:
        if (run_dir / "last.pt").is_file():
            return True
        existing = started_files(run_dir)
        if existing:  # files of a run, but its checkpoint is gone: starting over would replace them
            raise RunError(f"nothing to resume in {str(run_dir)!r}: it holds {', '.join(existing)} but no last.pt; "
                           f"start over with {option('force')}")
        return False
    existing = started_files(run_dir)
    if existing and not force:
        raise RunExists(f"run folder {str(run_dir)!r} already holds a run ({', '.join(existing)}); "
                        f"pass {option('resume')} to continue it, {option('force')} to start over, or "
                        f"{option('out')} for a new folder")
    return False


def stale_temps(run_dir: Path) -> list[Path]:
    """Temporary files of run files left by a killed writer (``.last.pt.XXXXXXXX.tmp``)."""
    return sorted(p for name in RUN_FILES for p in Path(run_dir).glob(f".{name}.*.tmp"))


def start_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Under the run folder's lock, after the job was built: remove stale temporary files and,
    for a fresh start (``force``, or a folder that never checkpointed), the old run's files."""
    run_dir = Path(run_dir)
    try:
        for tmp in stale_temps(run_dir):
            tmp.unlink(missing_ok=True)
        if not resume:
            for name in RUN_FILES:  # replace only the files a run writes, nothing else
                if (run_dir / name).is_file() or (run_dir / name).is_symlink():
                    (run_dir / name).unlink()
    except OSError as err:
        raise storage_error(run_dir, err) from None


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict[str, Any], *, kept: str = "") -> None:
    state = {"format": CHECKPOINT_FORMAT, **state}
    write_atomic(path, lambda f: torch.save(state, f), kept=kept)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu",
                    required: Iterable[str] = ()) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain data only); RunError
    if it lacks one of the ``required`` keys."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {str(path)!r} not found")
    try:
        with warnings.catch_warnings():  # torch warns about foreign files (pickle protocol, TorchScript) before
            warnings.simplefilter("ignore")  # it refuses them: popcli's one line below says it all
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise RunError(f"checkpoint {str(path)!r} is unreadable or not a popcli checkpoint "
                       f"({err.__class__.__name__}); start over with {option('force')}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{str(path)!r} is not a popcli checkpoint (expected format {CHECKPOINT_FORMAT})")
    missing = [key for key in required if key not in state]
    wrong = [key for key in ("progress", "recipe") if key in state and not isinstance(state[key], dict)]
    if missing or wrong:
        what = f"lacks {', '.join(map(repr, missing))}" if missing else f"has a malformed {', '.join(map(repr, wrong))}"
        raise RunError(f"checkpoint {str(path)!r} {what} (damaged or not written by popcli search); "
                       f"start over with {option('force')}")
    return state
