"""Five permuted Fashion-MNIST tasks on one random LeNet-300-100 (SupSup's PermutedMNIST setting):
one mask searched per task (data.permute_task = 0..4, the same seed, so the same random weights),
one multi-mask artifact holding all five, each task's accuracy re-measured from that file, and
its size against five single-mask artifacts and five dense fp32 models. Then SupSup's one-shot
task inference over that file (``popcli eval FILE --mask auto``, ``deploy.task_eval``): for
batches of 1, 8 and 64 test images of each task, how often the task is found from the images
alone, and the accuracy with the inferred mask against the task's own.

    python benchmarks/permuted_tasks.py --out sweeps/permuted [--epochs 3] [--density 0.1] [--task-images 10000]

Writes ``permuted.csv`` (one row per task), ``permuted_sizes.csv`` and
``permuted_task_inference.csv`` (one row per task and batch size) in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import popcli
from popcli import recipe as recipes
from popcli.data import load_data
from popcli.export import export
from popcli.deploy.task_eval import evaluate_tasks
from popcli.engine.loop import evaluate, search

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fashion-mnist-paper-sweep.yaml"


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def task_inference(path: Path, out: Path, batch_sizes: list[int], images: int | None) -> dict:
    """Task-id accuracy against batch size over the multi-mask file (``popcli eval --mask auto``)."""
    report = evaluate_tasks(path, batch_sizes=batch_sizes, limit=images, threads=1)
    rows = [{k: r[k] for k in ("mask", "batch_size", "batches", "images", "task_id_acc", "acc_inferred", "acc_given")}
            for r in report["task_inference"]["rows"]]
    _write_csv(out / "permuted_task_inference.csv", rows)
    return {"task_id_acc": report["task_inference"]["task_id_acc"], "accuracy": report["accuracy"],
            "latency_ms_p50": {str(r["batch_size"]): r["p50_ms"] for r in report["latency"]}}


def main(out: Path, epochs: int, density: float, tasks: int = 5, task_images: int | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    specs, rows, singles = [], [], []
    for task in range(tasks):
        run_dir = out / "runs" / f"task{task}"
        recipe = recipes.load(RECIPE, ["search.threads=1", f"search.epochs={epochs}", f"search.density={density}",
                                       f"data.permute_task={task}"])
        if not (run_dir / "summary.json").is_file():
            search(recipe, run_dir, force=True)
        singles.append(export(run_dir, out / f"task{task}.safetensors", force=True))
        specs.append(f"task{task}={run_dir}")
    multi = export(None, out / "five_tasks.safetensors", masks=specs, force=True)
    for task in range(tasks):
        summary = json.loads((out / "runs" / f"task{task}" / "summary.json").read_text())
        recipe = recipes.load(out / "runs" / f"task{task}" / "recipe.yaml")
        model = popcli.load(out / "five_tasks.safetensors", mask=f"task{task}")
        acc = evaluate(model, load_data(recipe.data, recipe.seed).test)["acc"]
        other = evaluate(model, load_data(recipes.load(RECIPE, [f"data.permute_task={(task + 1) % tasks}"]).data,
                                          recipe.seed).test)["acc"]
        rows.append({"task": task, "search_test_acc": summary["test_acc"], "multi_mask_file_test_acc": acc,
                     "equal": acc == summary["test_acc"], "acc_on_next_tasks_data": other,
                     "kept_fraction": singles[task]["kept_weights"] / singles[task]["masked_weights"]})
    _write_csv(out / "permuted.csv", rows)
    sizes = [{"what": "one multi-mask artifact (5 masks)", "bytes": multi["artifact_bytes"]},
             {"what": "5 single-mask artifacts", "bytes": sum(s["artifact_bytes"] for s in singles)},
             {"what": "5 dense fp32 safetensors models", "bytes": sum(s["dense_fp32_bytes"] for s in singles)}]
    _write_csv(out / "permuted_sizes.csv", sizes)
    inferred = task_inference(out / "five_tasks.safetensors", out, [1, 8, 64], task_images)
    print(json.dumps({"tasks": rows, "sizes": sizes, "task_inference": inferred}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sweeps/permuted"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--task-images", type=int, default=None,
                        help="test images per task for task inference (default: all 10,000)")
    args = parser.parse_args()
    main(args.out, args.epochs, args.density, task_images=args.task_images)
