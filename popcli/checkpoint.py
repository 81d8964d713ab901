"""Run folders and checkpoints: atomic writes, safe loads, no silent overwrites.

A run folder holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl`` (one line per
epoch), ``last.pt`` / ``best.pt`` (checkpoints) and ``summary.json`` (the final result).
Checkpoints are plain dicts of tensors and numbers written with ``torch.save`` and read back with
``weights_only=True``: no pickled code ever runs on load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from . import jsonsafe
from .errors import RunError, RunExists

RUN_FILES = ("recipe.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json")
PROTECTED = ("last.pt", "best.pt", "summary.json")  # what makes a folder "hold a run"
CHECKPOINT_FORMAT = "popcli-checkpoint/1"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise RunError(f"folder {str(path.parent)!r} does not exist; create it or choose another path")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 (and writers may replace tmp): give what open() gives
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(jsonsafe.dumps(record) + "\n")


def prepare_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Create ``run_dir``; refuse to reuse one holding a run unless resuming or forced."""
    run_dir = Path(run_dir)
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume:
        if not (run_dir / "last.pt").is_file():
            started = "it stopped before its first checkpoint" if existing else "no run there"
            raise RunError(f"nothing to resume in {str(run_dir)!r} ({started}: no last.pt); run the same command "
                           "without --resume to start it")
        return
    # a folder with no checkpoint and no summary (stopped before its first checkpoint) holds nothing
    # worth keeping: a new run simply replaces its recipe.yaml / metrics.jsonl
    if existing and not force and any(name in existing for name in PROTECTED):
        raise RunExists(f"run folder {str(run_dir)!r} already holds a run ({', '.join(existing)}); "
                       "pass --resume to continue it, --force to start over, or --out for a new folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in existing:  # --force: replace only the files a run writes, nothing else
        (run_dir / name).unlink()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    state = {"format": CHECKPOINT_FORMAT, **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {str(path)!r} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise RunError(f"checkpoint {str(path)!r} is unreadable or not a popcli checkpoint "
                       f"({err.__class__.__name__}); start over with --force") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{str(path)!r} is not a popcli checkpoint (expected format {CHECKPOINT_FORMAT})")
    return state
