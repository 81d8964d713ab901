"""The popcli version, in one place: what artifacts, checkpoints, summaries and ``--version`` record."""

__version__ = "0.2.0"
