"""The popcli command line: thin Typer commands over the library (``popcli``, ``python -m popcli``).

``app`` holds the Typer app and the helpers every command shares (the one-line error guard,
JSON output, the Ctrl-C stop flag); each command group is one module that registers on it:
``search``, ``artifacts`` (export, inspect, eval), ``catalog`` (models, recipes, recipe show,
runs), ``sweep`` (sweep, plot). ``tables`` and ``progress`` render the library's reports and
events; ``examples`` are the ``--help`` epilogs. The top layer: it may import any other.
"""

from __future__ import annotations


def get_app():
    """The Typer app with every command group registered (what ``main`` runs; tests drive it with
    ``typer.testing.CliRunner``)."""
    from . import artifacts, catalog, search, sweep  # noqa: F401  (each adds its commands to ``app``)
    from .app import app

    return app


def main() -> None:
    """The console entry point."""
    get_app()(prog_name="popcli")
