"""``popcli sweep`` and ``popcli plot``: the grid commands, registered on ``app.app``.

Thin like the rest of the CLI: ``sweep.grid.run_sweep`` does the work (here, ``-j N`` at once, or a
cluster launcher), ``plot.draw`` the figures; this module parses options and renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import EXIT_RUNTIME
from . import complete
from .app import StopFlag, app, err_console, guard, option_overrides, out_console, print_json

SWEEP_EXAMPLES = """Examples:

\b
  popcli sweep --grid search.density=0.1,0.3,0.5 --out sweeps/d
  popcli sweep recipes/fashion-mnist-paper-sweep.yaml --grid seed=0,1,2 --grid model.init=signed_constant,kaiming_normal
  popcli sweep cifar10-conv4 --grid search.density=0.05,0.1,0.3,0.5,0.7 -j 4          # 4 points at once
  popcli sweep cifar10-conv4 --grid ... --launcher submitit --launcher-opt slurm_partition=gpu --launcher-opt gpus_per_node=1
"""


def _launcher_options(items: list[str]) -> dict[str, Any]:
    import yaml

    from ..errors import UsageError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--launcher-opt {item!r}: expected KEY=VALUE, e.g. slurm_partition=gpu or timeout_min=60")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return options


@app.command(epilog=SWEEP_EXAMPLES)
@guard
def sweep(
    recipe_path: Optional[str] = typer.Argument(None, metavar="RECIPE", autocompletion=complete.recipes,
                                                help="YAML recipe or a packaged recipe's name (popcli recipes); omitted: the quick start."),
    grid: list[str] = typer.Option(..., "--grid", "-g", metavar="KEY=V1,V2", autocompletion=complete.key_values,
                                   help="Values of one recipe key (repeatable; the sweep runs the cross product)."),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", autocompletion=complete.key_values,
                                        help="Override for every point."),
    out: Path = typer.Option(Path("sweeps/sweep"), "--out", "-o", help="Sweep folder (runs/, results.csv, figures)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Points run at once (worker processes; one GPU each when there "
                                                     "are several, else the CPU cores split between them)."),
    launcher: Optional[str] = typer.Option(None, "--launcher", help="submitit: one cluster task per point (SLURM; "
                                                                    "pip install 'popcli[cluster]')."),
    launcher_opts: list[str] = typer.Option([], "--launcher-opt", metavar="KEY=VALUE",
                                            help="submitit executor parameter, e.g. cluster=slurm, slurm_partition=gpu, timeout_min=60."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset folder for every point (sets data.data_dir)."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Draw the figures at the end (needs matplotlib)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Run a grid of searches (resumable: finished points are skipped), write results.csv and figures.

    A point that fails is reported and the others still run (exit code 1 at the end)."""
    from ..engine.runtime import keep_freed_memory
    from ..sweep.grid import parse_grid, run_sweep
    from ..sweep.plot import PlotError, draw
    from .progress import SearchDisplay

    keep_freed_memory()
    shown = not quiet  # progress goes to stderr, so --json (stdout) keeps it, as search does
    overrides = [*overrides, *option_overrides(data_dir=data_dir)]

    def on_event(kind: str, info: dict[str, Any]) -> None:
        if kind.startswith("point") and shown:
            err_console.print(_point_line(kind, info), highlight=False, soft_wrap=True)
        if kind == "start" and display.task is not None:  # a new search: a fresh bar
            display.progress.remove_task(display.task)
            display.task = None
        display.handle(kind, info)

    with StopFlag() as stop, SearchDisplay(err_console, enabled=shown) as display:
        report = run_sweep(recipe_path, parse_grid(grid), out, overrides=overrides, on_event=on_event,
                           should_stop=stop, jobs=jobs, launcher=launcher, launcher_options=_launcher_options(launcher_opts))
    if plot and report["rows"]:
        try:
            report["figures"] = draw(report["results"], out)
        except PlotError as err:
            report["figures"], report["plot_error"] = [], str(err)
    _show_report(report, as_json)
    if report["failed"]:
        raise typer.Exit(EXIT_RUNTIME)


def _point_line(kind: str, info: dict[str, Any]) -> str:
    where = f"[bold]point {info['index'] + 1}/{info['total']}[/bold] {' '.join(info['point'])}"
    worker = f" (worker {info['worker']})" if "worker" in info else (f" (job {info['job_id']})" if "job_id" in info else "")
    state = {"point_skipped": "done already, skipped", "point": "running", "point_done": "done",
             "point_failed": f"[red]failed[/red]: {info.get('error', '')}"}.get(kind, kind)
    return f"{where}: {state}{worker}"


def _show_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    failed = f", {len(report['failed'])} failed" if report["failed"] else ""
    out_console.print(f"{report['ran']} run, {report['skipped']} skipped{failed} of {report['points']} points; "
                      f"{report['rows']} runs in {report['results']}", highlight=False)
    for figure in report.get("figures", []):
        out_console.print(f"figure: {figure}", highlight=False, soft_wrap=True)  # a path stays one copyable line
    for point in report["failed"]:
        err_console.print(f"[red]failed:[/red] {' '.join(point['point'])}: {point['error']} (folder {point['run_dir']}; "
                          "rerun the sweep to retry it)", highlight=False, soft_wrap=True)
    if report.get("plot_error"):
        err_console.print(f"[yellow]note:[/yellow] {report['plot_error']}", highlight=False)


@app.command("plot")
@guard
def plot_command(
    results: Path = typer.Argument(..., metavar="RESULTS_CSV", help="A results.csv written by popcli sweep, or the CSV of "
                                                                    "popcli runs --csv (the same columns)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the PNG files [default: beside the CSV]."),
) -> None:
    """Redraw a sweep's figures (accuracy vs % weights kept, vs width, vs parameter count, vs any varied key).

    Examples: popcli plot sweeps/d/results.csv -o figures/; popcli runs runs --csv all.csv && popcli plot all.csv"""
    from ..sweep.plot import draw

    for figure in draw(results, out):
        out_console.print(f"figure: {figure}", highlight=False, soft_wrap=True)  # a path stays one copyable line
