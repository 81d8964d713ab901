"""The command line's shared part: the Typer app, the consoles, and the helpers every command uses.

The library raises ``PopcliError``; ``guard`` turns it into one line on stderr and its exit
code. Progress goes to stderr (rich); results go to stdout, as one JSON object with ``--json``
(``print_json``). ``StopFlag`` turns the first Ctrl-C into a clean stop. The commands live in
one module per group (``search``, ``artifacts``, ``catalog``, ``sweep``) and register on ``app``.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from ..errors import EXIT_INTERRUPT, PopcliError
from ..storage import strict_json
from ..version import __version__

EXIT_CODES = ("Exit codes: 0 success; 1 the work failed (missing or corrupt data, artifact, checkpoint or file; "
              "failed verification; diverged search); 2 usage error (bad option, recipe key or value; an output "
              "that exists without --force); 130 interrupted (Ctrl-C).")


class Command(TyperCommand):
    """A command whose usage line reads ``popcli search [OPTIONS] [RECIPE]`` / ``popcli inspect
    [OPTIONS] FILE`` (optional arguments in brackets, required ones bare: typer wraps these in
    ``{}``), and whose unknown-option error suggests the closest option, or the recipe key it
    names (``--densty`` -> ``--set search.density=VALUE``)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        from typer._click.exceptions import NoSuchOption

        try:
            return super().parse_args(ctx, args)
        except NoSuchOption as err:
            raise NoSuchOption(err.option_name, message=self._no_such_option(ctx, err.option_name), ctx=ctx) from None

    def _no_such_option(self, ctx, option: str) -> str:
        from ..errors import closest
        from ..recipe.schema import closest_key

        names = [name for param in self.get_params(ctx) if param.param_type_name == "option"
                 for name in (*param.opts, *param.secondary_opts)]
        message = f"No such option: {option}"
        stem = option.split("=", 1)[0]
        prefixes = [n for n in names if n.startswith("--") and len(n) > 3 and stem.startswith(n)]  # --out-dir: --out
        found = max(prefixes, key=len) if prefixes else closest(option, names)
        key = closest_key(option.lstrip("-").split("=", 1)[0].replace("-", "_"))
        if "--set" in names and key and (found is None or found == "--set"):  # a recipe key written as an option
            return f"{message}. Did you mean --set {key}=VALUE?"
        return f"{message}. Did you mean {found}?" if found else f"{message} (see --help)"


class App(typer.Typer):
    """typer.Typer whose commands are ``Command``s."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or Command, **kwargs)


app = App(add_completion=True, no_args_is_help=True, rich_markup_mode=None, epilog=EXIT_CODES,
          help="Find sparse subnetworks hidden in randomly weighted networks (edge-popup) and ship them.")
err_console = Console(stderr=True)
out_console = Console()


def guard(command: Callable) -> Callable:
    """Run a command body; PopcliError -> 'error: ...' on stderr + its exit code, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PopcliError as err:
            err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(EXIT_INTERRUPT) from None

    return wrapper


def spinner(text: str, quiet: bool = False):
    """A transient spinner on stderr for slow work, only when stderr is a terminal."""
    import contextlib

    if quiet or not err_console.is_terminal:
        return contextlib.nullcontext()
    return err_console.status(text, spinner="dots")


def print_json(data: Any) -> None:
    sys.stdout.write(strict_json.dumps(data) + "\n")  # strict JSON: NaN / inf become null


def _version_callback(value: bool) -> None:
    if value:
        print(f"popcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


SEARCH_STOP = "stopping after this step (Ctrl-C again to abort without a checkpoint)..."


class StopFlag:
    """First Ctrl-C asks the work to stop at its next safe point (a search: checkpoint after the
    current step; an export: after the file being written); a second one aborts."""

    def __init__(self, message: str = SEARCH_STOP) -> None:
        self.requested = False
        self.message = message
        self._previous = None

    def __enter__(self) -> "StopFlag":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. called from a test runner thread)
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        err_console.print(f"\n{self.message}", highlight=False)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def __call__(self) -> bool:
        return self.requested


def option_overrides(*, device: str | None = None, data_dir: str | None = None) -> list[str]:
    """--device / --data-dir as the --set overrides they stand for."""
    pairs = (("search.device", device), ("data.data_dir", data_dir))
    return [f"{key}={json.dumps(value)}" for key, value in pairs if value]  # JSON quoting: a path stays a string
