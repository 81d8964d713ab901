"""Finished searches as rows: the one schema of ``popcli runs``, a sweep's results.csv and ``popcli plot``.

A row is one finished run folder (``summary.json``): ``run`` (where it is), the recipe keys
sweeps usually vary (``RECIPE_COLUMNS``, dotted as in ``--set``), every other recipe key that
differs between the rows, then what the search reached (``SUMMARY_COLUMNS``; ``epochs_run``
as actually run, fractional when ``search.max_steps`` stopped it mid-epoch; ``device`` and
``threads`` where it ran). ``run_row(folder)`` reads one folder (its ``recipe.yaml``, or the
summary's copies for folders without one); ``index(root)`` walks ``root`` for ``summary.json``
files at any depth (search run folders and the ``runs/`` of sweeps), like timm's summary.csv;
``to_csv`` / ``write_index`` write them (atomically). Damaged run folders are left out.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import RunError
from ..storage.atomic import atomic_write_text

RECIPE_COLUMNS = ("seed", "model.arch", "model.init", "model.width", "model.hidden", "data.dataset", "search.method",
                  "search.density", "search.epochs", "search.max_steps", "search.lr", "search.optimizer")
SUMMARY_COLUMNS = ("test_acc", "test_top5", "val_acc", "params_kept", "params_total", "kept_fraction", "steps",
                   "epochs_run", "step_time_ms", "wall_s", "device", "threads")
# summary.json keys that copy a recipe key: what a row holds for a folder without recipe.yaml
_COPIES = {"seed": "seed", "model.arch": "arch", "model.init": "init", "data.dataset": "dataset",
           "search.method": "method", "search.density": "density"}


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_row(folder: Path, name: str) -> dict[str, Any] | None:
    """The row of a finished run folder (None: unfinished or damaged)."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or "test_acc" not in summary:
        return None
    try:
        recipe = _flat(yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8")))
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        recipe = {key: summary.get(copy) for key, copy in _COPIES.items()}  # older or partial folders
    summary["epochs_run"] = summary.get("epochs")
    return {"run": name, **recipe, **{key: summary.get(key) for key in SUMMARY_COLUMNS}}


def _name(path: Path) -> str:
    """A folder name as text: bytes that are not UTF-8 shown as \\xNN escapes (CSV, JSON and tables stay valid)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def index(root: str | Path) -> list[dict[str, Any]]:
    """Rows of every finished search under ``root`` (any depth), sorted by folder."""
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"folder {str(root)!r} not found; pass a folder holding run folders (default: runs)")
    rows = []
    for summary_path in sorted(root.rglob("summary.json")):
        folder = summary_path.parent
        row = run_row(folder, _name(folder.relative_to(root)) if folder != root else ".")
        if row is not None:
            rows.append(row)
    return rows


def varying_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Recipe keys beyond RECIPE_COLUMNS whose value differs between ``rows`` (first-seen order)."""
    keys = dict.fromkeys(k for r in rows for k in r if k not in RECIPE_COLUMNS and k not in SUMMARY_COLUMNS
                         and k != "run")
    return [k for k in keys if len({json.dumps(r.get(k), sort_keys=True) for r in rows}) > 1]


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The CSV columns of ``rows``: run, the usual recipe keys, the other varying ones, the results."""
    return ["run", *RECIPE_COLUMNS, *varying_keys(rows), *SUMMARY_COLUMNS]


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text (lists as JSON, ``[300, 100]``; names as given, any Unicode)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(rows), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return buffer.getvalue()


def write_index(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, to_csv(rows))
    return path
