"""Figures of docs/RESULTS.md "Methods beyond edge-popup" from the CSVs of
benchmarks/methods_fmnist.py and benchmarks/permuted_tasks.py; copies the CSVs next to them.

    python benchmarks/plot_methods.py --data sweeps/methods --permuted sweeps/permuted --out docs/figures
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def biprop(data: Path, out: Path) -> None:
    table = rows(data / "biprop.csv")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, marker in (("edge-popup", "o"), ("biprop", "s")):
        points = sorted((float(r["search.density"]), 100 * float(r["test_acc"])) for r in table
                        if r["search.method"] == method)
        ax.plot([p[0] * 100 for p in points], [p[1] for p in points], marker=marker, label=method)
    ax.set(xlabel="% of weights kept", ylabel="test accuracy (%)", xscale="log",
           title="LeNet-300-100, Fashion-MNIST, kaiming_normal, 5 epochs")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "methods_biprop_vs_edge_popup.png", dpi=120)


def signed(data: Path, out: Path) -> None:
    table = rows(data / "signed.csv")
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    labels = [f"{r['search.method']}\n{r['model.init']}\n{float(r['search.density']):.0%}" for r in table]
    ax.bar(range(len(table)), [100 * float(r["test_acc"]) for r in table],
           color=["C0" if r["search.method"] == "edge-popup" else "C2" for r in table])
    ax.set_xticks(range(len(table)), labels, fontsize=6)
    ax.set(ylabel="test accuracy (%)", title="signed supermask vs edge-popup at the same kept count")
    for i, r in enumerate(table):
        ax.text(i, 100 * float(r["test_acc"]) + 0.5, f"{100 * float(r['test_acc']):.1f}", ha="center", fontsize=7)
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(out / "methods_signed_supermask.png", dpi=120)


def schedule(data: Path, out: Path) -> None:
    table = rows(data / "schedule.csv")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    densities = sorted({r["search.density"] for r in table}, key=float, reverse=True)
    for j, kind in enumerate(("constant", "anneal")):
        values = [100 * float(next(r["test_acc"] for r in table if r["search.density"] == d
                                   and r["search.density_schedule"] == kind)) for d in densities]
        ax.bar([i + 0.38 * j for i in range(len(densities))], values, width=0.38, label=kind)
        for i, v in enumerate(values):
            ax.text(i + 0.38 * j, v + 0.5, f"{v:.1f}", ha="center", fontsize=7)
    ax.set_xticks([i + 0.19 for i in range(len(densities))], [f"{float(d):.0%} kept" for d in densities])
    ax.set(ylabel="test accuracy (%)", title="edge-popup: density schedule (anneal over 3 of 5 epochs)", ylim=(0, 100))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "methods_density_schedule.png", dpi=120)


def permuted(data: Path, out: Path) -> None:
    tasks, sizes = rows(data / "permuted.csv"), rows(data / "permuted_sizes.csv")
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    a.bar([int(r["task"]) - 0.2 for r in tasks], [100 * float(r["search_test_acc"]) for r in tasks], 0.4,
          label="its own run")
    a.bar([int(r["task"]) + 0.2 for r in tasks], [100 * float(r["multi_mask_file_test_acc"]) for r in tasks], 0.4,
          label="from the 5-mask file")
    a.set(xlabel="permuted Fashion-MNIST task", ylabel="test accuracy (%)", ylim=(0, 100))
    a.legend(fontsize=7)
    b.barh(range(len(sizes)), [int(r["bytes"]) / 1024 for r in sizes], color=["C2", "C0", "C3"])
    b.set_yticks(range(len(sizes)), [r["what"] for r in sizes], fontsize=7)
    b.set(xscale="log", xlabel="KiB")
    for i, r in enumerate(sizes):
        b.text(int(r["bytes"]) / 1024, i, f" {int(r['bytes']) / 1024:,.0f}", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "methods_permuted_tasks.png", dpi=120)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("sweeps/methods"))
    parser.add_argument("--permuted", type=Path, default=Path("sweeps/permuted"))
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    for name, draw, folder, files in (("biprop", biprop, args.data, ["biprop.csv"]),
                                      ("signed", signed, args.data, ["signed.csv"]),
                                      ("schedule", schedule, args.data, ["schedule.csv"]),
                                      ("permuted", permuted, args.permuted, ["permuted.csv", "permuted_sizes.csv"])):
        if all((folder / f).is_file() for f in files):
            draw(folder, args.out)
            for f in files:
                shutil.copy(folder / f, args.out / f"methods_{f}")
            print("drew", name)
    if (args.permuted / "permuted_task_inference.csv").is_file():  # a table in RESULTS.md, no figure
        shutil.copy(args.permuted / "permuted_task_inference.csv", args.out / "methods_permuted_task_inference.csv")
