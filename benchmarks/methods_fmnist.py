"""Search methods on Fashion-MNIST (LeNet-300-100, recipes/fashion-mnist-paper-sweep.yaml): the
comparisons of docs/RESULTS.md "Methods beyond edge-popup", one CSV row per run.

    python benchmarks/methods_fmnist.py biprop   --out sweeps/methods   # biprop vs edge-popup, 5/10/30/50%
    python benchmarks/methods_fmnist.py signed   --out sweeps/methods   # signed supermask vs edge-popup, <= 5%
    python benchmarks/methods_fmnist.py schedule --out sweeps/methods   # density schedule at 5% and 1%

Every run: the same seed and epochs (the recipe's 5), search.threads=1, then exported; the row
holds its test accuracy, kept fraction, the artifact's bytes and bits per masked weight, and the
mask entropy (binary, or ternary for the signed supermask). Finished runs are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from popcli import artifact
from popcli import recipe as recipes
from popcli.export import export
from popcli.engine.loop import search

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fashion-mnist-paper-sweep.yaml"
COMMON = ["search.threads=1"]


def points(kind: str) -> list[tuple[str, list[str]]]:
    if kind == "biprop":  # kaiming_normal: with signed_constant weights biprop IS edge-popup (|w| is constant)
        return [(f"{m}-d{d}", [f"search.method={m}", f"search.density={d}", "model.init=kaiming_normal"])
                for d in (0.05, 0.1, 0.3, 0.5) for m in ("edge-popup", "biprop")]
    if kind == "signed":
        pairs = [("edge-popup", "signed_constant"), ("signed-supermask", "elus_signed_constant")]
        return [(f"{m}-{init}-d{d}", [f"search.method={m}", f"search.density={d}", f"model.init={init}"])
                for d in (0.03, 0.05) for m, init in pairs] + [
            ("signed-supermask-signed_constant-d0.05", ["search.method=signed-supermask", "search.density=0.05",
                                                        "model.init=signed_constant"])]
    if kind == "schedule":
        return [(f"{m}-{s}-d{d}", [f"search.method={m}", f"search.density={d}", f"search.density_schedule={s}",
                                   "search.density_anneal_epochs=3" if s == "anneal" else "search.density_anneal_epochs=0"])
                for d in (0.05, 0.01) for m in ("edge-popup",) for s in ("constant", "anneal")]
    raise SystemExit(f"unknown comparison {kind!r}: biprop, signed or schedule")


def ternary_entropy(report: dict) -> float | None:
    state = report.get("method_state") or {}
    if "inverted" not in state:
        return None
    n, kept, inverted = report["masked_weights"], report["kept_weights"], sum(state["inverted"])
    return -sum(p * math.log2(p) for p in ((n - kept) / n, (kept - inverted) / n, inverted / n) if p > 0)


def run(kind: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table = out / f"{kind}.csv"
    rows = []
    for name, overrides in points(kind):
        run_dir, path = out / "runs" / name, out / "artifacts" / f"{name}.safetensors"
        if not (run_dir / "summary.json").is_file():
            search(recipes.load(RECIPE, [*COMMON, *overrides]), run_dir, force=True)
        path.parent.mkdir(exist_ok=True)
        report = export(run_dir, path, force=True)
        report["method_state"] = json.loads(artifact.read(path).metadata.get("method_state", "{}"))
        summary = json.loads((run_dir / "summary.json").read_text())
        rows.append({"run": name, **dict(o.split("=", 1) for o in overrides), "test_acc": summary["test_acc"],
                     "kept_fraction": report["kept_weights"] / report["masked_weights"],
                     "artifact_bytes": report["artifact_bytes"], "bits_per_masked_weight": report["bits_per_masked_weight"],
                     "mask_bits_per_weight": report["mask_bits_per_weight"],
                     "binary_entropy_bits_per_weight": report["entropy_bits_per_weight"],
                     "ternary_entropy_bits_per_weight": ternary_entropy(report), "wall_s": summary["wall_s"]})
        with open(table, "w", newline="") as f:  # rewritten after every run: a partial sweep is readable
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("biprop", "signed", "schedule"))
    parser.add_argument("--out", type=Path, default=Path("sweeps/methods"))
    args = parser.parse_args()
    print(run(args.kind, args.out))
