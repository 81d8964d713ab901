"""The popcli command line: thin Typer commands over the library.

The library raises ``PopcliError``; ``_guard`` turns it into one line on stderr and its exit
code. Progress goes to stderr (rich); results go to stdout, as one JSON object with ``--json``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__, cli_examples as examples, tables
from . import jsonsafe
from .errors import EXIT_INTERRUPT, Interrupted, PopcliError, RunError

EXIT_CODES = ("Exit codes: 0 success; 1 the work failed (missing or corrupt data, artifact, checkpoint or file; "
              "failed verification; diverged search); 2 usage error (bad option, recipe key or value; an output "
              "that exists without --force); 130 interrupted (Ctrl-C).")
app = typer.Typer(add_completion=True, no_args_is_help=True, rich_markup_mode=None, epilog=EXIT_CODES,
                  help="Find sparse subnetworks hidden in randomly weighted networks (edge-popup) and ship them.")
err_console = Console(stderr=True)
out_console = Console()


def _guard(command: Callable) -> Callable:
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


def _spinner(text: str, quiet: bool = False):
    """A transient spinner on stderr for slow work, only when stderr is a terminal."""
    import contextlib

    if quiet or not err_console.is_terminal:
        return contextlib.nullcontext()
    return err_console.status(text, spinner="dots")


def _print_json(data: Any) -> None:
    sys.stdout.write(jsonsafe.dumps(data) + "\n")  # strict JSON: NaN / inf become null


def _version_callback(value: bool) -> None:
    if value:
        print(f"popcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


# --------------------------------------------------------------------------- search


class _StopFlag:
    """First Ctrl-C asks the search to checkpoint and stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopFlag":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. called from a test runner thread)
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        err_console.print("\nstopping after this step (Ctrl-C again to abort without a checkpoint)...")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def __call__(self) -> bool:
        return self.requested


def _option_overrides(*, device: str | None = None, data_dir: str | None = None) -> list[str]:
    """--device / --data-dir as the --set overrides they stand for."""
    pairs = (("search.device", device), ("data.data_dir", data_dir))
    return [f"{key}={json.dumps(value)}" for key, value in pairs if value]  # JSON quoting: a path stays a string


def _default_run_dir(recipe) -> Path:
    r = recipe
    return Path("runs") / f"{r.model.arch.replace(':', '.')}-{r.data.dataset}-{r.search.method}-d{r.search.density:g}-s{r.seed}"


@app.command(epilog=examples.SEARCH)
@_guard
def search(
    recipe_path: Optional[Path] = typer.Argument(None, metavar="[RECIPE]",
                                                 help="YAML recipe or a packaged recipe's name (popcli recipes); omitted: the Fashion-MNIST quick start."),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                        help="Override a recipe key, value parsed as YAML (repeatable), e.g. --set search.density=0.3"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder [default: runs/<arch>-<dataset>-<method>-d<density>-s<seed>]."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing run folder (replaces its run files)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps (sets search.device)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset folder (sets data.data_dir; only it is searched)."),
    show: bool = typer.Option(False, "--show-recipe", help="Print the resolved recipe (every key, type, range, default) and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Search a subnetwork: train one score per frozen random weight, keep the top-k per layer."""
    from . import recipe as recipes
    from .progress import SearchDisplay
    from .runtime import keep_freed_memory
    from .search import search as run_search

    keep_freed_memory()  # steadier, faster CPU steps; process-wide, so the CLI decides

    overrides = [*overrides, *_option_overrides(device=device, data_dir=data_dir)]
    if resume and recipe_path is None and out is not None:
        if not (out / "recipe.yaml").is_file():
            raise RunError(f"nothing to resume in {str(out)!r}: no run there (no recipe.yaml); start one with "
                           f"popcli search --out {out}")
        recipe_path = out / "recipe.yaml"
    recipe = recipes.load(recipe_path, overrides)
    if show:
        from .cli_catalog import show_recipe

        return show_recipe(recipe, as_json)
    run_dir = out or _default_run_dir(recipe)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 shows and prints
    try:
        with _StopFlag() as stop, SearchDisplay(err_console, enabled=not quiet and main_rank) as display:
            summary = run_search(recipe, run_dir, resume=resume, force=force, on_event=display.handle, should_stop=stop)
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint of this moment; say what gets out
        how = (f"resume from its last checkpoint: popcli search --resume --out {run_dir}" if (run_dir / "last.pt").is_file()
               else "it had no checkpoint yet: run the same command again to start it")
        raise Interrupted(f"aborted; {how}") from None
    if not main_rank:
        return
    if as_json:
        _print_json(summary)
    else:
        out_console.print(tables.summary_table(summary))


# --------------------------------------------------------------------------- export / inspect


@app.command(epilog=examples.EXPORT)
@_guard
def export(
    source: Optional[Path] = typer.Argument(None, metavar="RUN_OR_ARTIFACT",
                                            help="A run folder (its last.pt), a checkpoint, or (with --onnx) an artifact."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The artifact to write (.safetensors)."),
    masks: list[str] = typer.Option([], "--mask", metavar="NAME=RUN",
                                    help="One named mask per run, all over one seed, in one artifact (repeatable)."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="Also (or only) write a verified ONNX graph here."),
    prune_dead_units: bool = typer.Option(False, "--prune-dead-units", help="ONNX: remove units that cannot matter."),
    int8: bool = typer.Option(False, "--int8", help="ONNX: also write <name>.int8.onnx (static QDQ int8)."),
    codec: str = typer.Option("auto", "--codec", help="Mask codec: auto (the smaller), packbits or rans."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset folder for the ONNX parity check."),
    parity_samples: int = typer.Option(1000, "--parity-samples", help="Test images for the ONNX parity check."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
) -> None:
    """Ship a found subnetwork: seed + bit-packed masks (safetensors) and/or a verified ONNX graph."""
    from .export import export as run_export

    with _spinner("exporting and verifying...", quiet=as_json):
        report = run_export(source, out, onnx=onnx, prune_dead_units=prune_dead_units, int8=int8, codec=codec,
                            force=force, data_dir=data_dir, parity_samples=parity_samples, masks=masks)
    if as_json:
        _print_json(report)
    else:
        if "layers" in report:
            for table in tables.inspect_tables(report):
                out_console.print(table)
            tables.print_verification(err_console, report)
        if "onnx" in report:
            out_console.print(tables.onnx_table(report["onnx"]))
    if not report.get("verified", True):
        raise typer.Exit(1)


@app.command(epilog=examples.INSPECT)
@_guard
def inspect(
    artifact: Path = typer.Argument(..., metavar="FILE", help="An artifact written by popcli export."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
) -> None:
    """Show an artifact's metadata, per-layer densities and sizes, and verify it (exit 1 if it fails)."""
    from .export import inspect as run_inspect

    report = run_inspect(artifact)
    if as_json:
        _print_json(report)
    else:
        for table in tables.inspect_tables(report):
            out_console.print(table)
        tables.print_verification(err_console, report)
    if not report["verified"]:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- eval


@app.command("eval", epilog=examples.EVAL)
@_guard
def eval_command(
    source: Path = typer.Argument(..., metavar="ARTIFACT_OR_ONNX", help="An artifact or an ONNX file from popcli export."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset folder (else the usual search order)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Evaluate on another dataset of the same input shape."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N test images [default: all]."),
    batch_sizes: str = typer.Option("1,64", "--batch-sizes", help="Latency batch sizes, comma-separated."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for PyTorch and ONNX Runtime."),
    provider: str = typer.Option("CPUExecutionProvider", "--provider", help="ONNX Runtime execution provider."),
    int8: bool = typer.Option(False, "--int8", help="Artifacts: also quantize to int8 and measure it."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Multi-mask artifacts: the mask to evaluate (its task's data)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
) -> None:
    """Test accuracy (PyTorch, ONNX Runtime) and latency (p50/p90/p99, images/s) of a subnetwork."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .bench import evaluate

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                        disable=as_json, transient=True)
    task = None

    def on_event(kind: str, info: dict[str, Any]) -> None:  # the display starts with the first event
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task("", total=None)
        what = (f"accuracy: {info['engine']} on {info['images']:,} images" if kind == "accuracy"
                else f"latency: {info['engine']}, batch {info['batch_size']}")
        progress.update(task, description=what)

    try:
        report = evaluate(source, dataset=dataset, data_dir=data_dir, limit=limit, batch_sizes=batch_sizes,
                          threads=threads, provider=provider, int8=int8, on_event=on_event, mask=mask)
    finally:
        progress.stop()
    if as_json:
        _print_json(report)
        return
    for table in tables.eval_tables(report):
        out_console.print(table)


# --------------------------------------------------------------------------- models


@app.command(epilog=examples.MODELS)
@_guard
def models(as_json: bool = typer.Option(False, "--json", help="Print {name: description} as JSON.")) -> None:
    """List the registered architectures (use them as model.arch)."""
    from .models import list_models

    registered = list_models()
    if as_json:
        _print_json(registered)
        return
    table = Table("name", "description", title="models (model.arch)", title_justify="left")
    for name, description in registered.items():
        table.add_row(name, description)
    out_console.print(table)


from . import cli_catalog, cli_sweep  # noqa: E402,F401  (they add their commands to ``app``)


def main() -> None:
    app(prog_name="popcli")


if __name__ == "__main__":
    main()
