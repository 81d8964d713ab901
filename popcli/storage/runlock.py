"""An exclusive lock on a run folder, so two searches never write into one.

``RunLock(run_dir).acquire()`` creates the folder if needed (remembering which folders it
created), opens ``run_dir/.lock`` and takes an exclusive ``fcntl.flock`` without waiting. The
holder writes its pid, host and start time into the file; a second search reads them and says
who holds the folder. The kernel drops the lock when the holder dies (even by SIGKILL), so a
stale lock file never blocks anyone. ``release()`` unlocks and removes the lock file, and the
folders it created if they are still empty (a failed start leaves no empty run folder).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

from ..errors import RunError, StorageError
from .atomic import storage_error

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None


def _make_dirs(run_dir: Path) -> list[Path]:
    """mkdir -p ``run_dir``; the folders created, deepest last."""
    try:
        dangling = run_dir.is_symlink() and not run_dir.exists()
        missing = []
        for folder in [run_dir, *run_dir.parents]:
            if folder.is_dir():
                break
            missing.append(folder)
    except OSError as err:  # a name too long for the filesystem
        raise storage_error(run_dir, err) from None
    if dangling:
        raise StorageError(f"--out {str(run_dir)!r} is a dangling symlink or a symlink loop; "
                           "remove it or choose another --out")
    created = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
    except FileExistsError:
        if not run_dir.is_dir():
            raise StorageError(f"--out {str(run_dir)!r} is not a folder (a file, a dangling symlink or a symlink "
                               "loop is in the way); choose another --out") from None
    except OSError as err:
        _remove_empty(created)
        raise storage_error(run_dir, err) from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty (someone else's files): keep it
            return


class RunLock:
    """Exclusive use of a run folder by this process (see the module docstring)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.created: list[Path] = []
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.created = _make_dirs(self.run_dir)
        try:
            while True:  # the holder may remove the file between our open and flock: retry on a fresh one
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
                if not self._lock(fd):
                    holder = self._holder()
                    os.close(fd)
                    _remove_empty(self.created)
                    raise RunError(f"run folder {str(self.run_dir)!r} is in use by another search ({holder}); "
                                   "wait for it to finish, or choose another --out")
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            self._fd = fd
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as err:
            self.release()
            raise storage_error(self.path, err) from None
        return self

    @staticmethod
    def _lock(fd: int) -> bool:
        if fcntl is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as err:  # a filesystem without locks (some network mounts): run unlocked
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return True
            raise
        return True

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return f"pid {int(info['pid'])} on {str(info['host'])[:64]}, since {str(info['started'])[:32]}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that is starting"

    def release(self) -> None:
        """Unlock; remove the lock file and the folders ``acquire`` created if nothing else is in them."""
        if self._fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:  # read-only by now: the lock still dies with the descriptor
                pass
            os.close(self._fd)
            self._fd = None
        _remove_empty(self.created)
        self.created = []

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
