"""Figures of a sweep's results.csv in the style of the paper's Figures 3-7 (PNG, matplotlib).

Lines are split by every recipe key that varies except the x axis and the seed; the seeds of a
point are averaged and drawn with std error bars, n in the legend (``groups``). Titles name
the dataset, the model and what is fixed; panels of one figure share their y scale.

- ``accuracy_vs_density.png``: test accuracy against % of weights kept (drawn when the density
  varies); dense runs (learned weights) are horizontal lines, as in the paper; one panel per
  (dataset, architecture) when those vary.
- ``accuracy_vs_width.png``: test accuracy against the width multiplier (when the width varies).
- ``accuracy_vs_params.png``: test accuracy against the number of weights kept (log scale), one
  line per density: networks of different width compared at the same parameter count.
- ``accuracy_vs_<key>.png``: for any other numeric key that varies (search.lr, search.max_steps...).
- ``accuracy_by_<key>.png``: when only non-numeric keys (or only seeds) vary: one error bar per value.
matplotlib is an optional dependency (``pip install popcli[plot]``). Nothing prints.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..errors import PopcliError
from . import groups

DENSITY, WIDTH, METHOD = "search.density", "model.width", "search.method"
PANEL_KEYS = ("data.dataset", "model.arch")  # one panel per value when they vary
TITLE_FIXED = ("model.init", METHOD, DENSITY, WIDTH, "model.hidden", "search.epochs", "search.max_steps", "search.lr",
               "search.optimizer", "model.batchnorm")


class PlotError(PopcliError):
    """No matplotlib, or a results file that cannot be drawn."""


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results.csv with numbers parsed; rows without a test accuracy are left out."""
    path = Path(path)
    if not path.is_file():
        raise PlotError(f"{str(path)!r} not found; run `popcli sweep` first (it writes results.csv), or write one "
                        f"with `popcli runs FOLDER --csv FILE`")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise PlotError(f"{path}: not a readable CSV ({err.__class__.__name__})") from None
    needed = {METHOD, "model.init", DENSITY, "test_acc"}
    if rows and not needed <= set(rows[0]):
        raise PlotError(f"{path}: not a popcli results.csv or runs CSV (needs columns {', '.join(sorted(needed))})")
    parsed = []
    for row in rows:
        try:
            row["test_acc"] = float(row["test_acc"])
            row[DENSITY] = float(row[DENSITY])
            row[WIDTH] = float(row.get(WIDTH) or 1.0)
            row["params_kept"] = float(row.get("params_kept") or "nan")
        except ValueError:
            continue
        parsed.append({k: _value(v) for k, v in row.items()})
    return parsed


def _value(text: Any) -> Any:
    """CSV text -> number where it is one, else the text ("" stays "")."""
    if not isinstance(text, str) or text == "":
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("drawing figures needs matplotlib: pip install 'popcli[plot]' (results.csv is written "
                        "anyway; redraw with `popcli plot results.csv`)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(rows: list[dict[str, Any]], what: str, skip: tuple[str, ...]) -> str:
    """"fashion-mnist, fc: accuracy vs density" + a second line with every fixed key."""
    first = rows[0]
    model = f"{first.get('model.arch', '?')}"
    head = f"{first.get('data.dataset', '?')}, {model}: {what}"
    shown = groups.fixed(rows, [k for k in TITLE_FIXED if k not in skip])
    if first.get("model.arch") != "fc":
        shown.pop("model.hidden", None)  # only the MLP reads it
    seeds = sorted({r.get(groups.SEED) for r in rows})
    pieces = [groups.describe(k, v) for k, v in shown.items()] + ([f"seed {seeds[0]}"] if len(seeds) == 1 else [])
    lines, current = [], "fixed:"
    for piece in pieces:  # wrap between pieces, never inside "lr 0.1"
        if len(current) + len(piece) > 68 and current != "fixed:":
            lines.append(current + ",")
            current = piece
        else:
            current += (" " if current == "fixed:" else ", ") + piece
    return head + ("\n" + "\n".join([*lines, current]) if pieces else "")


def _draw_lines(ax, found: list[groups.Line], *, dashed_if=None, rows: list[dict[str, Any]] | None = None) -> None:
    lone = ", ".join(groups.label(((k, v),)) for k, v in groups.fixed(rows or [], groups.BARE).items())
    for line in found:
        xs = [p.x for p in line.points]
        ys = [100 * p.mean for p in line.points]
        errs = [100 * p.std for p in line.points]
        ns = sorted({p.n for p in line.points})
        n = f" (n={ns[0]})" if len(ns) == 1 and ns[0] > 1 else (f" (n={ns[0]}-{ns[-1]})" if len(ns) > 1 else "")
        style = "--" if dashed_if and dashed_if(line) else "-"
        ax.errorbar(xs, ys, yerr=errs if any(errs) else None, marker="o", markersize=4, capsize=3, linestyle=style,
                    label=(line.label if line.key else lone or line.label) + n)


def _dense_baselines(ax, dense_rows: list[dict[str, Any]], by: list[str]) -> None:
    """Dense training (learned weights): one horizontal line per group, a band of ± std over seeds."""
    keys = groups.splitting(dense_rows, [k for k in by if k not in (METHOD, DENSITY)])
    for line, style in zip(_dense_lines(dense_rows, keys), ("--", "-.", ":", (0, (5, 1)))):
        point = line.points[0]
        mean, std = 100 * point.mean, 100 * point.std
        n = f", n={point.n}" if point.n > 1 else ""
        ax.axhline(mean, color="black", linestyle=style, linewidth=1,
                   label=f"dense (learned weights){', ' + line.label if line.key else ''}{n}")
        if std:
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)


def _dense_lines(rows: list[dict[str, Any]], keys: list[str]) -> list[groups.Line]:
    for r in rows:
        r["_one"] = 0.0  # every dense run sits at the same x: one point per group
    return groups.lines(rows, "_one", keys)


def _clip_low(ax, main_values: list[float]) -> None:
    """Keep the y axis on the main curves: points far below are marked at the bottom with their value."""
    if not main_values:
        return
    margin = min(4.0, max(0.5, 0.25 * (max(main_values) - min(main_values))))
    bottom = min(main_values) - margin
    for line in ax.get_lines():
        if line.get_marker() != "o":  # error-bar caps and baselines are not data points
            continue
        for x, y in zip(*line.get_data()):
            if y < bottom:
                ax.annotate(f"{y:.1f}%", (x, bottom), xytext=(0, 6), textcoords="offset points", fontsize=7,
                            ha="center", color=line.get_color(), arrowprops={"arrowstyle": "->", "color": line.get_color()})
    ax.set_ylim(bottom=bottom)


def _finish(ax, *, xlabel: str, title: str, note: str) -> None:
    ax.set(xlabel=xlabel + (f"\n({note})" if note else ""), ylabel="test accuracy (%)", title=title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    entries = len(ax.get_legend_handles_labels()[1])
    # below the axes, never over a line (inside, "best" still covers points of many curves)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25 if note else -0.17), frameon=False,
              ncol=min(3, max(1, entries)))


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the legends below the axes included
    plt.close(fig)


def _panels(rows: list[dict[str, Any]]) -> list[tuple[tuple, list[dict[str, Any]]]]:
    keys = [k for k in PANEL_KEYS if k in groups.varying(rows)]
    values = sorted({tuple(str(r.get(k)) for k in keys) for r in rows})
    return [(v, [r for r in rows if tuple(str(r.get(k)) for k in keys) == v]) for v in values]


def _figure(plt, rows: list[dict[str, Any]], x_key: str, path: Path, *, xlabel: str, what: str,
            x_scale: float = 1.0, log_x: bool = False, exclude: tuple[str, ...] = ()) -> None:
    """accuracy against ``x_key``: one panel per (dataset, arch), shared y, lines by the other varying
    keys (but ``exclude``: keys that move along the x axis themselves)."""
    panels = _panels(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.6), squeeze=False, sharey=True)
    skip = (x_key, *PANEL_KEYS, *exclude)
    for ax, (_, here) in zip(axes[0], panels):
        by = [k for k in groups.varying(rows) if k not in (x_key, groups.SEED, *PANEL_KEYS, *exclude)]
        densities = x_key == DENSITY
        main = [r for r in here if not (densities and r.get(METHOD) == "dense")]
        for r in main:
            r["_x"] = (r.get(x_key) if not isinstance(r.get(x_key), (int, float)) else r[x_key] * x_scale)
        found = groups.lines(main, "_x", groups.splitting(main, by))
        _draw_lines(ax, found, dashed_if=lambda line: dict(line.key).get(METHOD) == "dense", rows=main)
        if densities:
            _dense_baselines(ax, [r for r in here if r.get(METHOD) == "dense"], by)
        _clip_low(ax, [100 * p.mean for line in found for p in line.points if dict(line.key).get(METHOD) != "supermask"]
                  + [100 * r["test_acc"] for r in here if r.get(METHOD) == "dense"])
        if log_x:
            _log_axis(ax)
        _finish(ax, xlabel=xlabel, title=_title(here, what, skip), note=groups.seeds_note(found))
    _save(plt, fig, path)


def _log_axis(ax) -> None:
    """Log x with a few readable labels (300k, 1.2M): minor ticks unlabeled so none overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _si(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def _by_category(plt, rows: list[dict[str, Any]], key: str | None, path: Path) -> None:
    """One error bar per value of a non-numeric ``key`` (or, with None, over all runs: a seed sweep)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    values = sorted({str(r.get(key)) for r in rows}) if key else ["all runs"]
    found = []
    for i, value in enumerate(values):
        here = [dict(r, _x=float(i)) for r in rows if key is None or str(r.get(key)) == value]
        found += groups.lines(here, "_x", [])
    _draw_lines(ax, found, rows=rows)
    ax.set_xticks(range(len(values)), values, rotation=15 if len(values) > 3 else 0)
    _finish(ax, xlabel=groups.SHORT.get(key, key) if key else "", title=_title(rows, "accuracy", (key,) if key else ()),
            note=groups.seeds_note(found))
    ax.get_legend().remove()
    _save(plt, fig, path)


def draw(results: str | Path, out: str | Path | None = None) -> list[str]:
    """Draw the figures of ``results`` into ``out`` (default: beside it); the files written."""
    rows = read_results(results)
    if not rows:
        raise PlotError(f"{results}: no finished runs to draw yet")
    out = Path(out) if out else Path(results).parent
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    varying = groups.varying(rows)
    written: list[Path] = []
    searched = [r for r in rows if r.get(METHOD) != "dense"]
    if len({r[DENSITY] for r in searched}) > 1:
        written.append(out / "accuracy_vs_density.png")
        _figure(plt, rows, DENSITY, written[-1], xlabel="% of weights kept", what="accuracy vs % of weights kept",
                x_scale=100.0)
    if WIDTH in varying:
        written.append(out / "accuracy_vs_width.png")
        _figure(plt, rows, WIDTH, written[-1], xlabel="width multiplier", what="accuracy vs width")
        written.append(out / "accuracy_vs_params.png")
        _params_figure(plt, rows, written[-1])
    numeric = [k for k in varying if k not in (DENSITY, WIDTH, groups.SEED, *PANEL_KEYS)
               and all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in rows)]
    for key in numeric:
        written.append(out / f"accuracy_vs_{key.rsplit('.', 1)[-1]}.png")
        _figure(plt, rows, key, written[-1], xlabel=groups.SHORT.get(key, key), what=f"accuracy vs {key}")
    if not written:  # only non-numeric keys (or only seeds) vary
        others = [k for k in varying if k != groups.SEED]
        name = f"accuracy_by_{others[0].rsplit('.', 1)[-1]}.png" if others else "accuracy_over_seeds.png"
        written.append(out / name)
        _by_category(plt, rows, others[0] if others else None, written[-1])
    return [str(p) for p in written]


def _params_figure(plt, rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against weights kept (log x): one line per density (and other varying keys), along the widths."""
    searched = [r for r in rows if r.get(METHOD) != "dense" and r.get("params_kept") == r.get("params_kept")]
    if not searched:
        searched = rows
    _figure(plt, searched, "params_kept", path, xlabel="weights kept (log scale)", what="accuracy vs weights kept",
            log_x=True, exclude=(WIDTH,))
