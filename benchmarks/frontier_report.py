"""The frontier's figure, tables and headline, from the rows of benchmarks/frontier.py's CSV.

``figure(rows, path)``: test accuracy against bytes on disk (log x), one line per method, storage
and base network, popcli's solid and the baselines dashed. ``table(rows)``: markdown, every point.
``smallest(rows, threshold)`` / ``headline(rows)``: at each accuracy target, the smallest
deployable file of every method, and popcli's best against the best baseline. Nothing here trains.
"""

from __future__ import annotations

from pathlib import Path

BASELINES = ("dense", "magnitude", "small dense")
TARGETS = (0.88, 0.85)
FLOOR = 76  # % accuracy: the figure's lower edge (collapsed points would flatten the frontier)


def _points(rows: list[dict]) -> list[dict]:
    """Measured points (tuning rows left out), numbers parsed."""
    out = []
    for row in rows:
        if row.get("storage") == "tune" or not row.get("file_bytes"):
            continue
        out.append({**row, "test_acc": float(row["test_acc"]), "file_bytes": int(float(row["file_bytes"])),
                    "infer_bytes": int(float(row["infer_bytes"])), "ort_b1_ms": float(row["ort_b1_ms"]),
                    "ort_b64_ms": float(row["ort_b64_ms"]), "density": float(row["density"])})
    return out


def base_method(row: dict) -> str:
    """The method without its series' suffix ("magnitude, distill T2 w0.3" -> "magnitude")."""
    return row["method"].split(",")[0].strip()


def is_popcli(row: dict) -> bool:
    return base_method(row) not in BASELINES


def label(row: dict) -> str:
    if base_method(row) == "small dense":
        return f"small dense MLP{row['method'][len('small dense'):]}, {row['storage']}"
    if is_popcli(row):
        return f"popcli {row['method']}, {row['base']}"
    return f"{row['method']} {row['base']}, {row['storage']}"


def _series(points: list[dict]) -> dict[str, list[dict]]:
    series: dict[str, list[dict]] = {}
    for row in points:
        series.setdefault(label(row), []).append(row)
    return {name: sorted(rows, key=lambda r: r["file_bytes"]) for name, rows in series.items()}


def figure(rows: list[dict], path: Path) -> Path | None:
    """The frontier figure (PNG); None when matplotlib or the points are missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    points = _points(rows)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(10, 6))
    colors = plt.get_cmap("tab20").colors
    ordered = sorted(_series(points).items(), key=lambda kv: (not is_popcli(kv[1][0]), kv[0]))
    for i, (name, series) in enumerate(ordered):
        popcli = is_popcli(series[0])
        marker = {"lenet": "o", "quickstart": "^", "small": "x"}.get(series[0]["base"], "s")
        ax.plot([r["file_bytes"] for r in series], [100 * r["test_acc"] for r in series], color=colors[(2 * i) % 20 + (i >= 10)],
                linestyle="-" if popcli else "--", linewidth=2.2 if popcli else 1.3,
                marker="s" if len(series) == 1 else marker, markersize=5, label=name)
    for target in TARGETS:
        ax.axhline(100 * target, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("bytes on disk of the deployable file (log scale)")
    ax.set_ylabel("Fashion-MNIST test accuracy (%), ONNX Runtime")
    ax.set_ylim(FLOOR, max(100 * r["test_acc"] for r in points) + 0.5)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.set_title(f"Fashion-MNIST size-accuracy frontier: popcli (solid) against baselines (dashed); below {FLOOR}%: table only",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _kib(nbytes: int) -> str:
    return f"{nbytes / 1024:,.1f} KiB"


def table(rows: list[dict]) -> str:
    """Every point as a markdown table, by method then base then size."""
    lines = ["| method | base | storage | kept | test acc | file | at inference | ORT b1 | ORT b64 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in sorted(_points(rows), key=lambda r: (not is_popcli(r), r["method"], r["base"], r["storage"][:8], r["density"])):
        lines.append(f"| {row['method']} | {row['base']} | {row['storage']} | {100 * row['density']:.3g}% | "
                     f"{100 * row['test_acc']:.2f}% | {_kib(row['file_bytes'])} | {_kib(row['infer_bytes'])} | "
                     f"{row['ort_b1_ms']:.3f} ms | {row['ort_b64_ms']:.3f} ms |")
    return "\n".join(lines)


def smallest(rows: list[dict], threshold: float) -> list[dict]:
    """Per series, its smallest file reaching ``threshold`` accuracy; smallest first."""
    best = []
    for series in _series(_points(rows)).values():
        ok = [r for r in series if r["test_acc"] >= threshold]
        if ok:
            best.append(min(ok, key=lambda r: r["file_bytes"]))
    return sorted(best, key=lambda r: r["file_bytes"])


def comparison(rows: list[dict], threshold: float) -> dict | None:
    """popcli's smallest file at ``threshold`` against the smallest baseline file; None if either is missing."""
    best = smallest(rows, threshold)
    ours = [r for r in best if is_popcli(r)]
    theirs = [r for r in best if not is_popcli(r)]
    if not ours or not theirs:
        return {"threshold": threshold, "popcli": ours[0] if ours else None, "baseline": theirs[0] if theirs else None,
                "ratio": None}
    return {"threshold": threshold, "popcli": ours[0], "baseline": theirs[0],
            "ratio": theirs[0]["file_bytes"] / ours[0]["file_bytes"]}


def headline(rows: list[dict]) -> str:
    """One line per target: who has the smallest file, and the ratio (baseline bytes / popcli bytes)."""
    lines = []
    for target in TARGETS:
        c = comparison(rows, target)
        if c["popcli"] is None or c["baseline"] is None:
            missing = "popcli" if c["popcli"] is None else "any baseline"
            lines.append(f">= {100 * target:.0f}%: no point of {missing} reaches it")
            continue
        p, b = c["popcli"], c["baseline"]
        lines.append(f">= {100 * target:.0f}%: {label(p)} at {100 * p['density']:.3g}% kept, "
                     f"{p['file_bytes']:,} B ({100 * p['test_acc']:.2f}%) vs {label(b)} {b['file_bytes']:,} B "
                     f"({100 * b['test_acc']:.2f}%): baseline / popcli = {c['ratio']:.2f}x")
    return "\n".join(lines)


def matrix(rows: list[dict]) -> str:
    """One markdown row per series, one column per kept fraction: "accuracy, file size" cells."""
    points = _points(rows)
    columns = sorted({round(r["density"], 2) for r in points}, reverse=True)
    lines = ["| series | " + " | ".join(f"{100 * c:.3g}%" for c in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for name, series in sorted(_series(points).items(), key=lambda kv: (not is_popcli(kv[1][0]), kv[0])):
        cells = {round(r["density"], 2): f"{100 * r['test_acc']:.2f}%, {_kib(r['file_bytes'])}" for r in series}
        lines.append(f"| {name} | " + " | ".join(cells.get(c, "") for c in columns) + " |")
    return "\n".join(lines)
