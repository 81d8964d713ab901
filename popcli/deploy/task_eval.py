"""``popcli eval FILE --mask auto``: how well SupSup's one-shot task inference finds each task.

For a multi-mask artifact (one mask per task, ``artifact.multimask``), ``evaluate_tasks`` takes
every mask's own test images (its recipe's data: ``data.permute_task`` gives each permuted task
its own pixel order), cuts them into batches of each size in ``batch_sizes``, and for every
batch infers the task from the images alone (``artifact.tasks.TaskMixture``: one forward and
backward over all masks superimposed) and classifies the batch with the inferred mask. Per mask
and batch size it reports the task-id accuracy (fraction of batches whose task was found), the
accuracy with the inferred mask and with the mask's own; and the latency of one inference per
batch size. The report has the keys ``popcli eval`` renders (``accuracy``, ``latency``, ...) plus
``task_inference``. Progress goes through ``on_event``; nothing prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .. import artifact
from ..artifact.rebuild import mask_models
from ..artifact.tasks import TaskMixture
from ..data.sample import real_inputs
from ..measure import count_correct, latency, machine

NOTE = ("Task inference: SupSup's one-shot entropy gradient (Wortsman et al. 2020), one forward and backward of "
        "the masks superimposed per batch; larger batches give it more evidence.")


def task_accuracy(mixture: TaskMixture, models: dict[str, torch.nn.Module], name: str, x: torch.Tensor,
                  y: torch.Tensor, batch_size: int) -> dict[str, Any]:
    """Task-id accuracy and classification accuracy of batches of ``batch_size`` of task ``name``'s
    images (x [N, C, H, W], labels y [N]); the last partial batch counts as one batch."""
    found = batches = hits_inferred = hits_given = 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            guess = mixture.infer(xb).mask
            found += guess == name
            batches += 1
            hits_inferred += count_correct(models[guess](xb), yb)[0]
            hits_given += count_correct(models[name](xb), yb)[0]
    images = max(1, len(y))
    return {"mask": name, "batch_size": batch_size, "batches": batches, "images": len(y),
            "task_id_acc": found / max(1, batches), "acc_inferred": hits_inferred / images,
            "acc_given": hits_given / images}


def evaluate_tasks(source: str | Path, *, batch_sizes: list[int], limit: int | None = None,
                   data_dir: str | None = None, threads: int = 1,
                   on_event: Callable[[str, dict], None] | None = None, trust_code: bool = False) -> dict[str, Any]:
    """The ``--mask auto`` report of the artifact ``source`` (see the module docstring)."""
    on_event = on_event or (lambda kind, info: None)
    art = artifact.read(source)
    views = {name: artifact.select(art, name) for name in art.header.mask_names}
    models = mask_models(art, trust_code=trust_code)
    mixture = TaskMixture(models)
    rows, data = [], {}
    for name, view in views.items():
        x, y, _ = real_inputs(view.recipe, data_dir, test=limit or 10**9)
        data[name] = x
        for size in batch_sizes:
            on_event("accuracy", {"engine": "task_inference", "label": f"task inference, mask {name}, batch {size}",
                                  "images": len(y)})
            rows.append({**task_accuracy(mixture, models, name, x, y, size), "dataset": view.recipe.data.dataset,
                         "permute_task": view.recipe.data.permute_task})
    images = sum(len(x) for x in data.values())
    where = {"runtime": "pytorch", "device": "cpu", "threads": threads}
    accuracy = [{"engine": "task_given", "label": "given task (its own mask)", **where,
                 "top1": _mean(rows, "acc_given", batch_sizes[0]), "top5": None}]
    for size in batch_sizes:
        accuracy.append({"engine": f"task_inferred_b{size}", "label": f"inferred task, batch {size}", **where,
                         "top1": _mean(rows, "acc_inferred", size), "top5": None})
    speed = []
    first = next(iter(data.values()))
    for size in batch_sizes:
        batch = first[:size] if len(first) >= size else first.repeat(-(-size // len(first)), 1, 1, 1)[:size]
        on_event("latency", {"engine": "task_inference", "label": "task inference", "batch_size": size})
        speed.append({"engine": "task_inference", "label": "task inference (SupSup one-shot)", **where,
                      "batch_size": size, **latency(lambda: mixture.infer(batch), size)})
    return {"source": str(source), "kind": "artifact", "mask": "auto", "inputs": "dataset",
            "dataset": "each mask's own", "test_images": images, "search_acc": None, "threads": threads, "provider": "pytorch",
            "machine": machine(), "accuracy": accuracy, "latency": speed, "note": NOTE,
            "task_inference": {"masks": list(views), "batch_sizes": list(batch_sizes), "rows": rows,
                               "task_id_acc": {str(size): _mean(rows, "task_id_acc", size, by="batches")
                                               for size in batch_sizes}}}


def _mean(rows: list[dict], key: str, size: int, by: str = "images") -> float:
    """``key`` over every mask at batch ``size``, weighted by images (or batches)."""
    chosen = [r for r in rows if r["batch_size"] == size]
    total = sum(r[by] for r in chosen)
    return sum(r[key] * r[by] for r in chosen) / max(1, total)
