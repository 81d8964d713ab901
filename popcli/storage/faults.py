"""Fault injection for tests: die or fail at a named point of a write, as a crash would.

Every atomic write passes three named points (``open:NAME`` after its temporary file is
created, ``write:NAME`` after the data is in it, ``rename:NAME`` after it replaced NAME). With
``POPCLI_FAULT`` unset (always, outside tests) ``point`` costs one environment lookup.

    POPCLI_FAULT=kill@write:last.pt#2     SIGKILL this process at the 2nd ``write:last.pt``
    POPCLI_FAULT=enospc@open:metrics.jsonl raise OSError(ENOSPC) there (a full disk)
    POPCLI_FAULT=sigint@rename:a.safetensors  send this process SIGINT there (a Ctrl-C at that moment)
    POPCLI_FAULT_TRACE=/path/file          append every point passed to that file, one a line

The count (``#N``, default 1) is per process. Nothing here is used by popcli's own logic.
"""

from __future__ import annotations

import errno
import os
import signal

_hits: dict[str, int] = {}
_ACTIONS = {"kill", "sigint", "enospc", "eacces", "erofs"}


def point(name: str) -> None:
    """A place where a crash or an I/O error may be injected (see the module docstring)."""
    trace = os.environ.get("POPCLI_FAULT_TRACE")
    if trace:
        with open(trace, "a") as f:
            f.write(name + "\n")
    spec = os.environ.get("POPCLI_FAULT")
    if not spec:
        return
    action, _, target = spec.partition("@")
    target, _, count = target.partition("#")
    if action not in _ACTIONS or target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(count or 1):
        return
    if action in ("kill", "sigint"):
        os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGINT)
        return
    code = {"enospc": errno.ENOSPC, "eacces": errno.EACCES, "erofs": errno.EROFS}[action]
    raise OSError(code, os.strerror(code))


def reset() -> None:
    """Forget the per-process hit counts (tests that inject several faults in one process)."""
    _hits.clear()
