"""Domain errors. Library code raises these; only the CLI turns them into a message + exit code.

Every message names the fix ("... run `make data` or pass --data-dir"). Exit codes, one per
class (the CLI exits with ``err.exit_code``):

- 2 ``UsageError`` and its subclasses: the command line or the recipe is wrong (an unknown key,
  a bad value, an option that does not fit, an output that exists without ``--force``).
- 1 every other ``PopcliError``: the command was fine but the work failed (a missing or corrupt
  dataset, artifact, checkpoint or file; a diverged search; a failed verification).
- 130 an interrupt (Ctrl-C), whether or not a checkpoint was written.

Messages name the fix in the caller's terms: the CLI's options (``--force``) by default, the
Python arguments (``force=True``) inside a public API call (``popcli.search``, ``popcli.save``,
... run under ``python_api()``); a message that names an option writes ``option("force")``.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPT = 130

_INTERFACE: contextvars.ContextVar[str] = contextvars.ContextVar("popcli_interface", default="cli")
# how a fix is spelled: (CLI, Python API); "DIR" / "PATH" stand for the value the message names
_OPTIONS = {"force": ("--force", "force=True"), "resume": ("--resume", "resume=True"),
            "out": ("--out", "another run_dir"), "-o": ("-o", "path"), "onnx": ("--onnx", "onnx=")}


@contextlib.contextmanager
def python_api() -> Iterator[None]:
    """Messages raised inside name Python arguments (``force=True``), not CLI options (``--force``)."""
    token = _INTERFACE.set("python")
    try:
        yield
    finally:
        _INTERFACE.reset(token)


def option(name: str) -> str:
    """How the caller spells the fix ``name`` (a key of ``_OPTIONS``): ``--force`` or ``force=True``."""
    cli, python = _OPTIONS.get(name, (name, name))
    return python if _INTERFACE.get() == "python" else cli


def in_python() -> bool:
    """Whether a public Python API call is running (messages then name arguments, not options)."""
    return _INTERFACE.get() == "python"


class PopcliError(Exception):
    """Base class: a problem the user can fix. The CLI prints str(err) on one line and exits 1."""

    exit_code = EXIT_RUNTIME


class UsageError(PopcliError):
    """The command line or the recipe asks for something invalid (exit 2)."""

    exit_code = EXIT_USAGE


class RecipeError(UsageError):
    """A recipe key is unknown, has the wrong type, or is out of range."""


class ModelError(UsageError):
    """An unknown architecture or an invalid model argument."""


class DataError(PopcliError):
    """A dataset is missing, corrupt, or does not match the recipe."""


class RunError(PopcliError):
    """A run folder or checkpoint problem (missing, corrupt, incompatible)."""


class RunExists(RunError):
    """A run folder already holds a run and neither --resume nor --force was given (exit 2)."""

    exit_code = EXIT_USAGE


class TrainingDiverged(PopcliError):
    """The loss became NaN or infinite."""


class ArtifactError(PopcliError):
    """An artifact is unreadable, not popcli's, of an unsupported version, or fails verification."""


class ArtifactNotFound(ArtifactError, FileNotFoundError):
    """The artifact path does not exist: a PopcliError and, as ``open`` users expect, a FileNotFoundError."""


class UntrustedCodeError(PopcliError):
    """A file (artifact, run folder, checkpoint) names model code that popcli imports only when the
    user opts in for the call (``trust_code=True``, ``--trust-code``); exit 1."""


class OutputExists(ArtifactError):
    """An output file exists and --force was not given, or its folder is missing (exit 2)."""

    exit_code = EXIT_USAGE


class Interrupted(PopcliError):
    """The user stopped the command (exit 130)."""

    exit_code = EXIT_INTERRUPT


class SearchInterrupted(Interrupted):
    """The user asked a search to stop; a checkpoint was written (exit 130)."""


class StorageError(PopcliError):
    """A file or folder could not be written (disk full, read-only, name too long, in use)."""


# --------------------------------------------------------------------------- message helpers
# (every layer's errors use them, so they live with the errors)

MAX_SHOWN = 60  # characters of a value shown in a one-line error


def shown(value: object) -> str:
    """``repr(value)`` cut to fit one line of an error message. An integer too long to print
    (Python refuses more than 4300 digits) is described by its size instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        digits = int(value.bit_length() * 0.30103) + 1  # log10(2): the decimal length, +-1
        return f"an integer of about {digits} digits"
    try:
        text = repr(value)
    except ValueError:  # a container holding such an integer
        return f"a {type(value).__name__} too large to print"
    return text if len(text) <= MAX_SHOWN else f"{text[:40]}...({len(text)} characters)"


def closest(word: str, choices) -> str | None:
    """The choice closest to ``word`` (difflib's ratio of at least 0.6), or None."""
    import difflib

    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices) -> str:
    """" (did you mean 'search.density'?)" for the choice closest to ``word``, or ""."""
    found = closest(word, choices)
    return f" (did you mean {found!r}?)" if found else ""


def count(n: int, noun: str) -> str:
    """"1 thread", "2 threads": a count with its noun in the right number."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
