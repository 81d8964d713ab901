"""Domain errors. Library code raises these; only the CLI turns them into a message + exit code.

Every message names the fix ("... run `make data` or pass --data-dir").
"""

from __future__ import annotations


class PopcliError(Exception):
    """Base class: a problem the user can fix. The CLI prints str(err) on one line and exits."""

    exit_code = 2


class RecipeError(PopcliError):
    """A recipe key is unknown, has the wrong type, or is out of range."""


class DataError(PopcliError):
    """A dataset is missing, corrupt, or does not match the recipe."""


class ModelError(PopcliError):
    """An unknown architecture or an invalid model argument."""


class RunError(PopcliError):
    """A run folder or checkpoint problem (exists, missing, corrupt, incompatible)."""


class TrainingDiverged(PopcliError):
    """The loss became NaN or infinite."""

    exit_code = 3


class ArtifactError(PopcliError):
    """An artifact is unreadable, not popcli's, of an unsupported version, or fails verification."""


class StorageError(PopcliError):
    """A file or folder could not be written (disk full, read-only, name too long, in use)."""
