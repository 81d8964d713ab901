"""Run folders and checkpoints: atomic writes, safe loads, no silent overwrites.

A run folder holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl`` (one line per
epoch), ``last.pt`` / ``best.pt`` (checkpoints) and ``summary.json`` (the final result).
Checkpoints are plain dicts of tensors and numbers written with ``torch.save`` and read back with
``weights_only=True``: no pickled code ever runs on load.

Every file is written to a temporary name beside it (``.NAME.XXXXXXXX.tmp``, shortened to fit
NAME_MAX), flushed to disk and renamed over NAME, so a kill or a full disk at any moment leaves
either the old file or the new one, never a partial one; an ``OSError`` becomes one
``StorageError`` line. ``exclusive`` writes create NAME only if nobody else did (hard link of the
finished temporary file), so two writers to one new path cannot both win. What is committed
where (last.pt is the run's one commit point) is search.py's business.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import torch

from . import faults, jsonsafe
from .errors import RunError, RunExists, StorageError

RUN_FILES = ("recipe.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json")
CHECKPOINT_FORMAT = "popcli-checkpoint/1"
CHECKPOINT_KEYS = ("model", "optimizer", "progress", "recipe")  # what a resume cannot do without
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(path: Path, err: OSError, kept: str = "") -> StorageError:
    """One line for an ``OSError`` while writing ``path``, naming the fix. ``kept`` says what
    survived (e.g. "the last checkpoint is kept")."""
    reason = err.strerror or err.__class__.__name__
    if err.errno in _NO_SPACE:
        fix = "free some disk space or choose another folder, then run the command again"
    elif err.errno in _NOT_WRITABLE:
        fix = "the folder is read-only or not writable by you: choose another output folder"
    elif err.errno == errno.ENAMETOOLONG:
        fix = "the name is too long for this filesystem: choose a shorter one"
    elif err.errno == errno.ELOOP:
        fix = "the path holds a symlink loop: remove it or choose another path"
    elif err.errno == errno.EISDIR:
        fix = "it is a folder: choose a file name"
    else:
        fix = "check the path and the filesystem, or choose another path"
    kept = f"; {kept}" if kept else ""
    return StorageError(f"cannot write {str(path)!r}: {reason}{kept}; {fix}")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def temp_name(name: str, limit: int = 255) -> str:
    """``.NAME.XXXXXXXX.tmp`` beside NAME, with NAME cut so the whole fits ``limit`` bytes."""
    suffix = f".{secrets.token_hex(4)}.tmp"
    encoded = os.fsencode(name)[: max(1, limit - 1 - len(suffix))]
    return "." + os.fsdecode(encoded).encode("utf-8", "ignore").decode("utf-8", "ignore") + suffix


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory; the rename is done either way
        pass
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path, exclusive: bool) -> None:
    """Rename ``tmp`` over ``path``; ``exclusive``: only if ``path`` does not exist yet."""
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails with EEXIST if another writer got there first: atomic
    except FileExistsError:
        raise StorageError(f"{str(path)!r} already exists (written by another process meanwhile?); "
                           "pass --force to overwrite it or choose another path") from None
    except OSError as err:  # no hard links here (some FUSE/SMB mounts): claim the name, then replace
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise StorageError(f"{str(path)!r} already exists (written by another process meanwhile?); "
                               "pass --force to overwrite it or choose another path") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def write_atomic(path: str | Path, fill: bytes | Callable[[BinaryIO], None] | None, *, exclusive: bool = False,
                 kept: str = "", _path_writer: Callable[[Path], None] | None = None) -> None:
    """Write ``path`` atomically: ``fill`` (bytes, or a function writing a binary file object)
    goes to a temporary file beside it, which is synced and renamed over ``path``.

    ``exclusive``: refuse (StorageError) if ``path`` exists when the data is ready. Any OSError
    (disk full, read-only, name too long) -> StorageError; ``path`` is left as it was and the
    temporary file removed. ``kept`` is added to that message (what the caller kept).
    """
    path = Path(path)
    folder = path.parent
    try:
        folder_ok, is_dir = folder.is_dir(), path.is_dir()
    except OSError as err:  # ENAMETOOLONG, ELOOP
        raise storage_error(path, err, kept) from None
    if not folder_ok:
        raise StorageError(f"folder {str(folder)!r} does not exist; create it or choose another path")
    if is_dir:
        raise StorageError(f"{str(path)!r} is a folder; choose a file name")
    tmp = folder / temp_name(path.name, _name_max(folder))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as err:
        raise storage_error(path, err, kept) from None
    try:
        faults.point(f"open:{path.name}")
        with os.fdopen(fd, "wb") as f:
            if isinstance(fill, (bytes, bytearray, memoryview)):
                f.write(fill)
            elif fill is not None:
                fill(f)
            else:  # a writer that opens the file by name (atomic_write)
                _path_writer(tmp)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the name points at it
        faults.point(f"write:{path.name}")
        _publish(tmp, path, exclusive)
        _fsync_dir(folder)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, err, kept) from None
    except RuntimeError as err:  # torch.save's zip writer turns a failed write into "enforce fail"
        tmp.unlink(missing_ok=True)
        if isinstance(err.__context__, OSError):
            raise storage_error(path, err.__context__, kept) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    faults.point(f"rename:{path.name}")


def atomic_write(path: Path, write: Callable[[Path], None], *, exclusive: bool = False) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``
    (``write_atomic`` for writers that need a file name rather than a file object)."""
    write_atomic(path, None, exclusive=exclusive, _path_writer=write)


def atomic_write_text(path: Path, text: str, *, kept: str = "") -> None:
    write_atomic(path, text.encode("utf-8"), kept=kept)


def write_lines(path: Path, lines: Iterable[str], *, kept: str = "") -> None:
    """``path`` := the lines (each without its newline), atomically."""
    atomic_write_text(path, "".join(line + "\n" for line in lines), kept=kept)


def copy_atomic(source: Path, path: Path, *, kept: str = "") -> None:
    """``path`` := a copy of ``source`` (a hard link where possible: same bytes, no space), atomically."""
    folder = path.parent
    try:
        if path.samefile(source):  # already a link to it (a resume re-deriving best.pt): rename would do nothing
            return
    except OSError:
        pass
    tmp = folder / temp_name(path.name, _name_max(folder))
    try:
        os.link(source, tmp)
    except OSError:  # no hard links on this filesystem: copy the bytes
        write_atomic(path, lambda f: _copy_into(source, f), kept=kept)
        return
    try:
        faults.point(f"open:{path.name}")
        faults.point(f"write:{path.name}")
        os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, err, kept) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    faults.point(f"rename:{path.name}")


def _copy_into(source: Path, f: BinaryIO) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, f, 1 << 20)


def json_line(record: dict[str, Any]) -> str:
    return jsonsafe.dumps(record)  # strict JSON: a NaN figure becomes null


# --------------------------------------------------------------------------- run folders


def started_files(run_dir: Path) -> list[str]:
    """The run files in ``run_dir``; a folder holding only recipe.yaml never checkpointed (nothing to lose)."""
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    return [] if existing == ["recipe.yaml"] else existing


def check_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse to reuse a folder holding a run unless resuming or forced; nothing is changed."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise RunError(f"nothing to resume in {str(run_dir)!r}: no last.pt; start the run again without --resume")
        return
    existing = started_files(run_dir)
    if existing and not force:
        raise RunExists(f"run folder {str(run_dir)!r} already holds a run ({', '.join(existing)}); "
                        "pass --resume to continue it, --force to start over, or --out for a new folder")


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
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise RunError(f"checkpoint {str(path)!r} is unreadable or not a popcli checkpoint "
                       f"({err.__class__.__name__}); start over with --force") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{str(path)!r} is not a popcli checkpoint (expected format {CHECKPOINT_FORMAT})")
    missing = [key for key in required if key not in state]
    wrong = [key for key in ("progress", "recipe") if key in state and not isinstance(state[key], dict)]
    if missing or wrong:
        what = f"lacks {', '.join(map(repr, missing))}" if missing else f"has a malformed {', '.join(map(repr, wrong))}"
        raise RunError(f"checkpoint {str(path)!r} {what} (damaged or not written by popcli search); "
                       "start over with --force")
    return state
