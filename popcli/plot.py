"""Figures of a sweep's results.csv in the style of the paper's Figures 3-7 (PNG, matplotlib).

- ``accuracy_vs_density.png``: test accuracy against % of weights kept, one line per
  (method, init), the dense baseline of each init as a dashed horizontal line; one panel per
  (architecture, width).
- ``accuracy_vs_width.png``: test accuracy against the width multiplier, one line per
  (method, init, % kept); drawn when the width varies.
- ``accuracy_vs_params.png``: test accuracy against the number of weights kept (log scale), one
  marker per width: networks of different width compared at the same parameter count.
matplotlib is an optional dependency (``pip install popcli[plot]``). Nothing prints.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

from .errors import PopcliError


class PlotError(PopcliError):
    """No matplotlib, or a results file that cannot be drawn."""


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results.csv with numbers parsed; rows without a test accuracy are left out."""
    path = Path(path)
    if not path.is_file():
        raise PlotError(f"{str(path)!r} not found; run `popcli sweep` first (it writes results.csv)")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise PlotError(f"{path}: not a readable CSV ({err.__class__.__name__})") from None
    needed = {"search.method", "model.init", "search.density", "test_acc"}
    if rows and not needed <= set(rows[0]):
        raise PlotError(f"{path}: not a popcli results.csv (needs columns {', '.join(sorted(needed))})")
    parsed = []
    for row in rows:
        try:
            row["test_acc"] = float(row["test_acc"])
            row["search.density"] = float(row["search.density"])
            row["model.width"] = float(row.get("model.width") or 1.0)
            row["params_kept"] = float(row.get("params_kept") or "nan")
        except ValueError:
            continue
        parsed.append(row)
    return parsed


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("drawing figures needs matplotlib: pip install 'popcli[plot]' (results.csv is written "
                        "anyway; redraw with `popcli plot results.csv`)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _clip_low(ax, main_values: list[float], margin: float = 4.0) -> None:
    """Keep the y axis on the main curves: points far below are marked at the bottom with their value."""
    if not main_values:
        return
    bottom = min(main_values) - margin
    for line in ax.get_lines():
        for x, y in zip(*line.get_data()):
            if y < bottom:
                ax.annotate(f"{y:.1f}%", (x, bottom), xytext=(0, 6), textcoords="offset points", fontsize=7,
                            ha="center", color=line.get_color(), arrowprops={"arrowstyle": "->", "color": line.get_color()})
    ax.set_ylim(bottom=bottom)


def _finish(ax, *, xlabel: str, title: str) -> None:
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _density_figure(plt, rows: list[dict[str, Any]], path: Path) -> None:
    panels = sorted({(r["model.arch"], r["model.width"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (arch, width) in zip(axes[0], panels):
        here = [r for r in rows if (r["model.arch"], r["model.width"]) == (arch, width)]
        lines = defaultdict(list)
        for r in here:
            if r["search.method"] != "dense":
                lines[(r["search.method"], r["model.init"])].append((100 * r["search.density"], 100 * r["test_acc"]))
        for (method, init), xy in sorted(lines.items()):
            xs, ys = zip(*sorted(xy))
            ax.plot(xs, ys, marker="o", linestyle="-" if method == "edge-popup" else ":", label=f"{method}, {init}")
        dense = [r for r in here if r["search.method"] == "dense"]
        for r, style in zip(dense, ("--", "-.", ":", (0, (5, 1)))):
            ax.axhline(100 * r["test_acc"], color="black", linestyle=style, linewidth=1,
                       label=f"dense (learned weights), {r['model.init']}")
        _clip_low(ax, [100 * r["test_acc"] for r in here if r["search.method"] != "supermask"])
        _finish(ax, xlabel="% of weights kept", title=f"{arch}, width {width:g}")
    _save(plt, fig, path)


def _width_figure(plt, rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    lines = defaultdict(list)
    for r in rows:
        label = f"{r['search.method']}, {r['model.init']}" + ("" if r["search.method"] == "dense" else
                                                              f", {100 * r['search.density']:g}% kept")
        lines[label].append((r["model.width"], 100 * r["test_acc"]))
    for label, xy in sorted(lines.items()):
        xs, ys = zip(*sorted(xy))
        ax.plot(xs, ys, marker="o", linestyle="--" if label.startswith("dense") else "-", label=label)
    _finish(ax, xlabel="width multiplier", title="accuracy against width")
    _save(plt, fig, path)


def _params_figure(plt, rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for width in sorted({r["model.width"] for r in rows}):
        here = [r for r in rows if r["model.width"] == width and r["search.method"] != "dense"]
        if here:
            ax.scatter([r["params_kept"] for r in here], [100 * r["test_acc"] for r in here], label=f"width {width:g}")
    ax.set_xscale("log")
    _finish(ax, xlabel="weights kept", title="accuracy at a parameter count")
    _save(plt, fig, path)


def draw(results: str | Path, out: str | Path | None = None) -> list[str]:
    """Draw the figures of ``results`` into ``out`` (default: beside it); the files written."""
    rows = read_results(results)
    if not rows:
        raise PlotError(f"{results}: no finished runs to draw yet")
    out = Path(out) if out else Path(results).parent
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    written = []
    if len({r["search.density"] for r in rows}) > 1 or any(r["search.method"] == "dense" for r in rows):
        _density_figure(plt, rows, out / "accuracy_vs_density.png")
        written.append(str(out / "accuracy_vs_density.png"))
    if len({r["model.width"] for r in rows}) > 1:
        _width_figure(plt, rows, out / "accuracy_vs_width.png")
        _params_figure(plt, rows, out / "accuracy_vs_params.png")
        written += [str(out / "accuracy_vs_width.png"), str(out / "accuracy_vs_params.png")]
    return written
