"""Which keys of a sweep vary, and the lines a figure draws from its rows (mean and std over seeds).

A sweep's rows (one per run: recipe keys + results) are split into lines by EVERY recipe key
that varies except the figure's x axis and the seed; the seeds of one (line, x) point are
averaged: ``Point(x, mean, std, n)``. Keys that cannot change a result (threads, device,
loader workers, the data folder) never split lines. No plotting here: ``plot`` draws.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

SEED = "seed"
# Recipe keys that change how fast a run goes or where it reads from, not what it computes.
NUISANCE = ("search.threads", "search.device", "data.workers", "data.data_dir", "data.eval_batch_size",
            "search.compile", "search.channels_last", "data.download")
# Short names for labels and titles; other keys show their last dotted part.
SHORT = {"search.density": "density", "model.width": "width", "search.max_steps": "max steps",
         "search.epochs": "epochs", "search.lr": "lr", "model.init": "init", "search.method": "method"}
# Keys whose values label a line without their name ("edge-popup, signed_constant").
BARE = ("search.method", "model.init")


@dataclass(frozen=True)
class Point:
    x: float
    mean: float  # of the metric over the seeds (and any repeats) at this x
    std: float  # sample std over them; 0.0 for one run
    n: int


@dataclass
class Line:
    key: tuple[tuple[str, Any], ...]  # (recipe key, value) pairs that define it
    points: list[Point]

    @property
    def label(self) -> str:
        return label(self.key)


def is_recipe_key(column: str) -> bool:
    return column == SEED or column.split(".", 1)[0] in ("model", "data", "search")


def varying(rows: list[dict[str, Any]], columns: Iterable[str] | None = None) -> list[str]:
    """Recipe columns whose value differs between rows (nuisance keys left out), in column order."""
    columns = list(columns if columns is not None else (rows[0] if rows else {}))
    return [c for c in columns if is_recipe_key(c) and c not in NUISANCE
            and len({_hashable(r.get(c)) for r in rows}) > 1]


def fixed(rows: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    """``keys`` that take one value over ``rows``, with that value."""
    out = {}
    for key in keys:
        values = {_hashable(r.get(key)) for r in rows}
        if len(values) == 1 and rows and rows[0].get(key) not in (None, ""):
            out[key] = rows[0].get(key)
    return out


def lines(rows: list[dict[str, Any]], x_key: str, by: list[str], metric: str = "test_acc") -> list[Line]:
    """One Line per distinct value of the ``by`` keys; each point the mean / std / n of ``metric``
    over the rows (seeds) at one value of ``x_key``. Rows without a number for x or metric are left out."""
    groups: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        x, y = _number(r.get(x_key)), _number(r.get(metric))
        if x is None or y is None:
            continue
        groups[tuple((k, _hashable(r.get(k))) for k in by)][x].append(y)
    out = []
    for key, by_x in sorted(groups.items(), key=lambda item: _sort_key(item[0])):
        points = [Point(x, statistics.fmean(ys), statistics.stdev(ys) if len(ys) > 1 else 0.0, len(ys))
                  for x, ys in sorted(by_x.items())]
        out.append(Line(key, points))
    return out


def splitting(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """``keys`` in label order (method, init, then the rest), without those whose value follows from
    the others (e.g. the optimizer of each method): the same lines, shorter labels."""
    order = [k for k in BARE if k in keys] + [k for k in keys if k not in BARE]

    def count(subset: list[str]) -> int:
        return len({tuple(_hashable(r.get(k)) for k in subset) for r in rows})

    kept = list(order)
    for key in reversed(order):
        rest = [k for k in kept if k != key]
        if count(rest) == count(kept):  # count([]) is 1: a lone line needs no key at all
            kept = rest
    return kept


def label(key: tuple[tuple[str, Any], ...]) -> str:
    parts = []
    for name, value in key:
        shown = "dense (learned weights)" if (name, value) == ("search.method", "dense") else _show(value)
        parts.append(shown if name in BARE else f"{SHORT.get(name, name.rsplit('.', 1)[-1])} {shown}")
    return ", ".join(parts) or "all runs"


def describe(key: str, value: Any) -> str:
    """"epochs 3", "lr 0.1", "init signed_constant": a fixed key as a title shows it."""
    return f"{SHORT.get(key, key.rsplit('.', 1)[-1])} {_show(value)}"


def seeds_note(all_lines: list[Line]) -> str:
    """"mean ± std over 3 seeds" (or "n = 1-3 runs per point"), "" when every point is one run."""
    ns = sorted({p.n for line in all_lines for p in line.points})
    if not ns or ns == [1]:
        return ""
    return f"mean ± std over {ns[0]} seeds" if len(ns) == 1 else f"mean ± std, n = {ns[0]}-{ns[-1]} runs per point"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _show(value: Any) -> str:
    number = _number(value)
    if number is not None and not isinstance(value, bool):
        return f"{number:g}"
    return str(list(value) if isinstance(value, tuple) else value)


def _sort_key(key: tuple) -> tuple:
    return tuple((_number(v) is None, _number(v) or 0.0, str(v)) for _, v in key)
