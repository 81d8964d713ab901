"""One row per finished search under a folder (``popcli runs``), like timm's summary.csv.

``index(root)`` walks ``root`` for ``summary.json`` files at any depth (search run folders and
the ``runs/`` of sweeps) and returns one row each: where it is (a folder name that is not UTF-8
shown with ``\\xNN`` escapes), what was searched, what it reached. ``write_index`` writes them
as CSV (atomically). Damaged run folders are left out.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..storage.atomic import atomic_write_text

COLUMNS = ("run", "arch", "dataset", "method", "init", "density", "seed", "epochs", "steps", "test_acc", "test_top5",
           "val_acc", "params_kept", "params_total", "wall_s", "device")


def index(root: str | Path) -> list[dict[str, Any]]:
    """Rows of every finished search under ``root``, sorted by folder."""
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"folder {str(root)!r} not found; pass a folder holding run folders (default: runs)")
    rows = []
    for summary_path in sorted(root.rglob("summary.json")):
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(summary, dict) or "test_acc" not in summary:
            continue
        row = {k: summary.get(k) for k in COLUMNS}
        row["run"] = _text(summary_path.parent.relative_to(root)) if summary_path.parent != root else "."
        rows.append(row)
    return rows


def _text(path: Path) -> str:
    """A folder name as text: bytes that are not UTF-8 become ``\\xNN`` escapes (a CSV file and a
    terminal take text; such a name would otherwise fail to encode when written)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_index(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, to_csv(rows))
    return path
