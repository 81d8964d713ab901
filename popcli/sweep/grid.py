"""``popcli sweep``: a grid of searches over recipe keys, resumable, summarized in results.csv.

``run_sweep(recipe, grid, out)`` runs the cross product of the grid's values, one run folder per
point under ``out/runs/`` (named after the point, plus a hash of every override so that two
sweeps with different ``--set`` values never share a folder). A point whose run finished is
skipped; one that was interrupted is resumed. After every point, ``out/results.csv`` is
rewritten (atomically) from every finished run in ``out/runs/``, so several sweeps into the same
folder accumulate (a second method, another learning rate); its columns are ``runs_index``'s (the
schema ``popcli runs`` writes too): the usual keys, every other recipe key that differs between
the runs, the results. The report lists every point with its status and metrics. Points run here one by one, ``jobs`` at
once in worker processes (their recipes in ``out/points/``), or one cluster task each
(``pool``); a failed point is reported and the others run. Figures: ``plot``. Nothing prints.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path
from typing import Any, Callable

from .. import recipe as recipes
from ..errors import RecipeError
from . import pool, runs_index

EventHandler = Callable[[str, dict[str, Any]], None]


def _split_values(text: str) -> list[str]:
    """"0.1,0.5,[1,2]" -> ["0.1", "0.5", "[1,2]"]: commas inside brackets belong to the value."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += 1 if char in "[{" else -1 if char in "]}" else 0
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``--grid key=v1,v2`` options -> [(key, [v1, v2])], values kept as text for ``--set``."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not _split_values(values):
            raise RecipeError(f"--grid {item!r}: expected section.key=value1,value2,... e.g. search.density=0.1,0.5")
        grid.append((key.strip(), _split_values(values)))
    if len({key for key, _ in grid}) != len(grid):
        raise RecipeError("--grid: each key may appear once; put all its values in one --grid")
    return grid


def points(grid: list[tuple[str, list[str]]]) -> list[list[str]]:
    """The cross product as lists of ``key=value`` overrides, in grid order."""
    keys = [key for key, _ in grid]
    return [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*(values for _, values in grid))]


def point_name(point: list[str], recipe: recipes.Recipe) -> str:
    """A readable, unique folder name: the point's short keys and values, plus a hash of the whole
    resolved recipe (so a changed recipe file or --set never reuses another point's run)."""
    readable = "_".join(f"{o.split('=', 1)[0].rsplit('.', 1)[-1]}-{o.split('=', 1)[1]}" for o in point) or "base"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "", readable)[:80]
    digest = hashlib.sha256(recipes.dump(recipe).encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def collect(out: Path) -> list[dict[str, Any]]:
    """One row per finished run under ``out/runs`` (``runs_index``'s schema), sorted by run name."""
    rows = (runs_index.run_row(folder, folder.name) for folder in sorted((out / "runs").glob("*")) if folder.is_dir())
    return [row for row in rows if row is not None]


def write_results(out: Path) -> Path:
    """Rewrite ``out/results.csv`` from every finished run; its path."""
    return runs_index.write_index(collect(out), out / "results.csv")


def _point_results(placed: list[pool.Task], failed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per point of the grid, in order: its overrides, folder, status and (finished) its metrics."""
    errors = {item["index"]: item.get("error") for item in failed}
    out = []
    for task in placed:
        row = runs_index.run_row(task.run_dir, task.run_dir.name)
        status = "failed" if task.index in errors else "done" if row is not None else "unfinished"
        metrics = {key: row.get(key) for key in runs_index.SUMMARY_COLUMNS} if row is not None else None
        out.append({**task.info(), "status": status, "metrics": metrics,
                    **({"error": errors[task.index]} if task.index in errors else {})})
    return out


def _existing(out: Path, name: str) -> Path:
    """The run folder of this recipe: one with the same recipe hash (the name's suffix) that
    finished, even if another sweep named it differently; else ``out/runs/name``."""
    digest = name.rsplit("-", 1)[-1]
    for folder in sorted((out / "runs").glob(f"*-{digest}")):
        if (folder / "summary.json").is_file():
            return folder
    return out / "runs" / name


def run_sweep(recipe_path: str | Path | None, grid: list[tuple[str, list[str]]], out: str | Path, *,
              overrides: list[str] | None = None, on_event: EventHandler | None = None,
              should_stop: Callable[[], bool] | None = None, jobs: int = 1, launcher: str | None = None,
              launcher_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every point of ``grid`` (skipping finished ones, resuming interrupted ones) here one by
    one, ``jobs`` at once in worker processes, or (``launcher="submitit"``) one cluster task per
    point; a report. A failed point is listed in ``report["failed"]``; the others still run."""
    on_event = on_event or (lambda kind, info: None)
    should_stop = should_stop or (lambda: False)
    overrides, out = list(overrides or []), Path(out)
    if jobs < 1:
        raise RecipeError(f"-j {jobs}: expected at least 1 point at a time")
    if launcher not in (None, "submitit"):
        raise RecipeError(f"--launcher {launcher!r}: the only cluster launcher is submitit (SLURM); or use -j N")
    todo = points(grid)
    recipes_ = [recipes.load(recipe_path, [*overrides, *point]) for point in todo]  # every error before any work
    (out / "runs").mkdir(parents=True, exist_ok=True)
    tasks, skipped, placed = [], 0, []
    for index, (point, recipe) in enumerate(zip(todo, recipes_)):
        task = pool.Task(index, len(todo), point, recipe, _existing(out, point_name(point, recipe)))
        placed.append(task)
        if (task.run_dir / "summary.json").is_file():
            skipped += 1
            on_event("point_skipped", task.info())
        else:
            tasks.append(task)
    refresh = lambda: write_results(out)  # noqa: E731 - results.csv after every finished point
    if launcher == "submitit":
        failed = pool.run_submitit(tasks, out, launcher_options or {}, on_event, refresh)
    elif jobs > 1 and len(tasks) > 1:
        failed = pool.run_parallel(tasks, jobs, out, on_event, should_stop, refresh)
    else:
        failed = pool.run_serial(tasks, on_event, should_stop, refresh)
    results = write_results(out)
    return {"points": len(todo), "ran": len(tasks) - len(failed), "skipped": skipped, "failed": failed,
            "results": str(results), "out": str(out), "rows": len(collect(out)),
            "point_results": _point_results(placed, failed)}
