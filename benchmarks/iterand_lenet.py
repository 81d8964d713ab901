"""Edge-popup with and without IteRand (docs/RESULTS.md, "IteRand"): LeNet-300-100 on
Fashion-MNIST, the frontier's "lenet" settings (recipes/fashion-mnist-paper-sweep.yaml, init
scaled_signed_constant, 2 epochs, 1 thread), at the given densities and seeds. Per run: test
accuracy, artifact bytes and the bytes of its ``iterand.draws`` entry (popcli inspect), the mean
training step time (wall time between step events, redraw rounds included: the median of
summary.json hides a round, which runs once every K steps) and the time of one redraw round.
One CSV row per run.

    nice -n 5 python benchmarks/iterand_lenet.py OUT.csv [--densities 0.05,0.1] [--seeds 0]
        [--every 0,100] [--rate 0.1] [--epochs 2]

A run is the same as ``popcli search recipes/fashion-mnist-paper-sweep.yaml --set
model.init=scaled_signed_constant --set search.epochs=2 --set search.threads=1 --set
search.density=D [--set search.iterand_every_steps=K --set search.iterand_rate=R] --out RUN &&
popcli export RUN -o a.safetensors && popcli inspect a.safetensors``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from popcli import recipe as recipes
from popcli.engine.loop import search
from popcli.export.api import export

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "fashion-mnist-paper-sweep.yaml"


def one(out: Path, density: float, seed: int, every: int, rate: float, epochs: int) -> dict:
    name = f"d{density}-s{seed}-" + (f"k{every}-r{rate}" if every else "plain")
    sets = [f"search.density={density}", f"seed={seed}", "model.init=scaled_signed_constant", f"search.epochs={epochs}",
            "search.threads=1", "search.device=cpu"]
    if every:
        sets += [f"search.iterand_every_steps={every}", f"search.iterand_rate={rate}"]
    stamps: list[float] = []
    rounds: list[float] = []

    def on_event(kind, info):
        if kind == "step":
            stamps.append(time.perf_counter())

    recipe = recipes.load(str(RECIPE), sets)
    summary = search(recipe, out / name, force=True, on_event=on_event)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    steps = len(gaps) // epochs  # the gaps inside each epoch (one gap per epoch spans its evaluation)
    inner = [g for i, g in enumerate(gaps) if (i + 1) % steps]
    report = export(out / name, out / f"{name}.safetensors", force=True)
    if every:
        rounds = _round_time(recipe)
    return {"run": name, "density": density, "seed": seed, "iterand_every_steps": every, "iterand_rate": rate if every
            else "", "epochs": epochs, "steps": summary["steps"], "test_acc": summary["test_acc"],
            "artifact_bytes": report["artifact_bytes"], "mask_bytes": report["mask_bytes"],
            "iterand_draw_bytes": report.get("iterand_draw_bytes", 0),
            "iterand_redrawn_kept": report.get("iterand_redrawn_kept", 0), "kept_weights": report["kept_weights"],
            "step_time_ms_median": summary["step_time_ms"], "step_time_ms_mean": 1e3 * statistics.fmean(inner),
            "round_ms": 1e3 * statistics.median(rounds) if rounds else ""}


def _round_time(recipe) -> list[float]:
    """Seconds of five redraw rounds on the recipe's freshly built model (1 thread)."""
    import torch

    from popcli.methods import iterand
    from popcli.models import build_model, init_density

    torch.set_num_threads(1)
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=28, num_classes=10, seed=recipe.seed)
    controller = iterand.enable(model, recipe.search, recipe.seed, recipe.model.init, init_density(recipe.search))
    times = []
    for r in range(1, 6):
        start = time.perf_counter()
        controller.after_step(model, r * recipe.search.iterand_every_steps)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("csv", type=Path)
    parser.add_argument("--densities", default="0.05,0.1")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--every", default="0,100", help="K values; 0: edge-popup without IteRand")
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("runs/iterand"))
    args = parser.parse_args()
    rows = []
    for seed in map(int, args.seeds.split(",")):
        for density in map(float, args.densities.split(",")):
            for every in map(int, args.every.split(",")):  # interleaved: machine load hits all alike
                rows.append(one(args.runs, density, seed, every, args.rate, args.epochs))
                print(rows[-1], flush=True)
    with args.csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
