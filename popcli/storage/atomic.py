"""Atomic writes: a file is either the old one or the new one, never a partial one or a stranger's.

Every file is written to a temporary name beside it (``.NAME.XXXXXXXX.tmp``, shortened to fit
NAME_MAX), flushed to disk and renamed over NAME, so a kill or a full disk at any moment leaves
either the old file or the new one, never a partial one; an ``OSError`` becomes one
``StorageError`` line. ``exclusive`` writes create NAME only if nobody else did (hard link of the
finished temporary file), so two writers to one new path cannot both win; ``check_output``
refuses, before any work, an output path that exists (without ``force``) or cannot be one.
What is committed where (last.pt is a run's one commit point) is ``popcli.engine``'s business.
"""

from __future__ import annotations

import hashlib

import errno
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from ..errors import OutputExists, StorageError, in_python, option as option_name
from . import faults

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


_TEMP_SUFFIX = len(".XXXXXXXX.tmp")
STALE_AFTER_S = 5.0  # an unlocked temporary file at least this old belongs to a writer that died


def _temp_stem(name: str, limit: int) -> str:
    """``.NAME`` cut so that ``.NAME.XXXXXXXX.tmp`` fits ``limit`` bytes."""
    encoded = os.fsencode(name)[: max(1, limit - 1 - _TEMP_SUFFIX)]
    return "." + os.fsdecode(encoded).encode("utf-8", "ignore").decode("utf-8", "ignore")


def temp_name(name: str, limit: int = 255) -> str:
    """``.NAME.XXXXXXXX.tmp`` beside NAME, with NAME cut so the whole fits ``limit`` bytes."""
    return f"{_temp_stem(name, limit)}.{secrets.token_hex(4)}.tmp"


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` that killed writers left (``.NAME.XXXXXXXX.tmp``):
    a live writer holds an exclusive ``flock`` on its temporary file from the moment it creates
    it, so one that nobody holds and that is older than ``STALE_AFTER_S`` is a dead writer's.
    Returns what was removed; a file that cannot be checked or removed is left alone."""
    import fcntl
    import re
    import time

    folder = path.parent
    pattern = re.compile(re.escape(_temp_stem(path.name, _name_max(folder))) + r"\.[0-9a-f]{8}\.tmp")
    removed = []
    try:
        candidates = [p for p in folder.glob(".*.tmp") if pattern.fullmatch(p.name)]
    except OSError:
        return removed
    for candidate in candidates:
        try:
            info = os.lstat(candidate)
            if not stat.S_ISREG(info.st_mode) or time.time() - info.st_ctime < STALE_AFTER_S:
                continue  # not a file, or a writer that may not have locked it yet
            fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
            os.unlink(candidate)
            removed.append(candidate)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


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
        raise OutputExists(f"{str(path)!r} already exists (written by another process meanwhile?); "
                           f"pass {option_name('force')} to overwrite it or choose another path") from None
    except OSError as err:  # no hard links here (some FUSE/SMB mounts): claim the name, then replace
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise OutputExists(f"{str(path)!r} already exists (written by another process meanwhile?); "
                               f"pass {option_name('force')} to overwrite it or choose another path") from None
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
    remove_stale_temps(path)  # what a writer killed before its rename left (SIGKILL during an export)
    tmp = folder / temp_name(path.name, _name_max(folder))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as err:
        raise storage_error(path, err, kept) from None
    try:
        _lock(fd)  # held until the file is published: remove_stale_temps leaves a live writer's file alone
        faults.point(f"open:{path.name}")
        with os.fdopen(fd, "wb", closefd=False) as f:
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
    finally:
        os.close(fd)
    faults.point(f"rename:{path.name}")


def _lock(fd: int) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a filesystem without flock: the age rule of remove_stale_temps still protects it
        pass


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


def check_output(path: Path, force: bool, option: str) -> None:
    """OutputExists unless ``path`` can be written: its folder exists, and it does not (or ``force``).
    ``option`` names the command-line option that chose it, for the message. The final write is
    exclusive without ``force`` (``write_atomic``), so a writer that appears meanwhile still loses."""
    try:
        is_dir, exists, folder_ok = path.is_dir(), path.exists(), path.parent.is_dir()
    except OSError as err:  # a name too long for the filesystem, a symlink loop in the folders
        raise storage_error(path, err) from None
    where = "path" if in_python() else f"{option} path"  # Python callers passed an argument, not an option
    if is_dir:
        raise OutputExists(f"{str(path)!r} is a folder; choose a file name for {'the path' if in_python() else option}")
    if exists and not force:
        raise OutputExists(f"{str(path)!r} already exists; pass {option_name('force')} to overwrite it or choose "
                           f"another {where}")
    if not folder_ok:
        raise OutputExists(f"folder {str(path.parent)!r} does not exist; create it or choose another {where}")


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
