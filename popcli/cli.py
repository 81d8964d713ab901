"""The popcli command line: thin Typer commands over the library.

The library raises ``PopcliError``; ``_guard`` turns it into one line on stderr and its exit
code. Progress goes to stderr (rich); results go to stdout, as one JSON object with ``--json``.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import PopcliError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
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
            err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")


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


def _default_run_dir(recipe) -> Path:
    r = recipe
    return Path("runs") / f"{r.model.arch}-{r.data.dataset}-{r.search.method}-d{r.search.density:g}-s{r.seed}"


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="search result", show_header=False, title_justify="left")
    rows = [
        ("test accuracy", f"{summary['test_acc'] * 100:.2f}%"),
        ("method / arch / init", f"{summary['method']} / {summary['arch']} / {summary['init']}"),
        ("weights kept", f"{summary['params_kept']:,} of {summary['params_total']:,} ({summary['kept_fraction'] * 100:.1f}%)"),
        ("steps / epochs", f"{summary['steps']} / {summary['epochs']:g}"),
        ("median step", f"{summary['step_time_ms']:.1f} ms ({summary['images_per_s']:.0f} images/s)"),
        ("wall time", f"{summary['wall_s']:.1f} s on {summary['device']}"),
        ("weights unchanged", "verified" if summary["weights_verified"] else "n/a (dense training)"),
        ("run folder", summary["run_dir"]),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


@app.command()
@_guard
def search(
    recipe_path: Optional[Path] = typer.Argument(None, metavar="[RECIPE]",
                                                 help="YAML recipe; omitted: the packaged Fashion-MNIST quick start."),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                        help="Override a recipe key, value parsed as YAML (repeatable), e.g. --set search.density=0.3"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder [default: runs/<arch>-<dataset>-<method>-d<density>-s<seed>]."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing run folder (replaces its run files)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps (sets search.device)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Search a subnetwork: train one score per frozen random weight, keep the top-k per layer."""
    from . import recipe as recipes
    from .progress import SearchDisplay
    from .runtime import keep_freed_memory
    from .search import search as run_search

    keep_freed_memory()  # steadier, faster CPU steps; process-wide, so the CLI decides

    if device:
        overrides = [*overrides, f"search.device={device}"]
    if resume and recipe_path is None and out is not None:
        recipe_path = out / "recipe.yaml"
    recipe = recipes.load(recipe_path, overrides)
    run_dir = out or _default_run_dir(recipe)
    with _StopFlag() as stop, SearchDisplay(err_console, enabled=not quiet) as display:
        summary = run_search(recipe, run_dir, resume=resume, force=force, on_event=display.handle, should_stop=stop)
    if as_json:
        _print_json(summary)
    else:
        out_console.print(_summary_table(summary))


# --------------------------------------------------------------------------- export / inspect


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:,.0f} {unit}" if unit == "B" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return ""


def _inspect_tables(report: dict[str, Any]) -> list[Table]:
    about = Table(title=report["path"], show_header=False, title_justify="left")
    metrics = report["metrics"]
    rows = [
        ("format / generator", f"{report['format']} / {report['generator']}"),
        ("model", f"{report['arch']} ({report['method']}, {report['init']}, seed {report['seed']})"),
        ("kept", f"{report['kept_weights']:,} of {report['masked_weights']:,} masked weights "
                 f"({report['kept_weights'] / max(1, report['masked_weights']):.1%}; recipe density {report['density']:g})"),
        ("search result", f"test accuracy {metrics['test_acc']:.2%}" if "test_acc" in metrics else "not recorded"),
        ("written by", f"popcli {report['popcli_version']}, torch {report['torch_version']}"),
    ]
    for key, value in rows:
        about.add_row(key, value)
    layers = Table("layer", "shape", "kept", "density", "entropy bits/weight", title="masked layers",
                   title_justify="left")
    for layer in report["layers"]:
        layers.add_row(layer["name"], "x".join(map(str, layer["shape"])), f"{layer['kept']:,}", f"{layer['density']:.4f}",
                       f"{layer['entropy_bits_per_weight']:.4f}")
    if report["masked_weights"]:
        layers.caption = (f"masks: {report['mask_codec']}, {report['mask_bytes']:,} bytes = "
                          f"{report['mask_bits_per_weight']:.4f} bits per weight (entropy {report['entropy_bits_per_weight']:.4f})")
    sizes = Table("", "bytes", "vs artifact", title="size", title_justify="left")
    bits = report["bits_per_masked_weight"]
    sizes.add_row("artifact", _size(report["artifact_bytes"]), f"1x ({bits:.4f} bits per masked weight)" if bits else "1x")
    sizes.add_row("dense fp32 safetensors", _size(report["dense_fp32_bytes"]), f"{report['dense_over_artifact']:.1f}x")
    ratio = report["checkpoint_over_artifact"]
    sizes.add_row("search checkpoint", _size(report["checkpoint_bytes"]), f"{ratio:.1f}x" if ratio else "n/a")
    return [about, layers, sizes]


def _print_verification(report: dict[str, Any]) -> None:
    if report.get("verified"):
        err_console.print("verified: masks decode, kept counts and weight checksums match", highlight=False)
    for problem in report.get("problems", []):
        err_console.print(f"[red]problem:[/red] {problem}", highlight=False, soft_wrap=True)


@app.command()
@_guard
def export(
    source: Path = typer.Argument(..., metavar="RUN_DIR_OR_CHECKPOINT", help="A run folder (its last.pt) or a checkpoint."),
    out: Path = typer.Option(..., "--out", "-o", help="The artifact to write (.safetensors)."),
    codec: str = typer.Option("auto", "--codec", help="Mask codec: auto (the smaller), packbits or rans."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print the artifact report as one JSON object on stdout."),
) -> None:
    """Write a found subnetwork as seed + bit-packed masks (safetensors), then verify the file."""
    from .export import export as run_export

    report = run_export(source, out, codec=codec, force=force)
    if as_json:
        _print_json(report)
    else:
        for table in _inspect_tables(report):
            out_console.print(table)
        _print_verification(report)
    if not report["verified"]:
        raise typer.Exit(1)


@app.command()
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
        for table in _inspect_tables(report):
            out_console.print(table)
        _print_verification(report)
    if not report["verified"]:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- models


@app.command()
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


def main() -> None:
    app(prog_name="popcli")


if __name__ == "__main__":
    main()
