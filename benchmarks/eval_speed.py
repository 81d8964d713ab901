"""A loaded artifact's (and a searched model's) eval forward against dense models, side by side in one run.

1. ``popcli.load(path)`` (mode "infer", the default) over the same model baked by ``popcli.deploy.bake``
   (plain layers, batch norm folded), at batch 1 and 64, for the quick-start model (fc 1024-1024
   with batch norm, 1x28x28) and conv4 (3x32x32). Target <= 1.05. ``fold_bn=False`` (plain
   layers, batch norm kept: bit-exact logits) and ``mode="search"`` (subnet layers, cached
   effective weights) are shown too.
2. A searched conv4 (subnet layers with live scores, eval mode) over dense conv4 (the same
   architecture with plain layers), batch 1. Target <= 1.05.

Every figure is the median over ``--rounds`` rounds of each model's p50 per-call latency
(``popcli.measure.latency``: warm-up, >= 50 calls at batch 1, 10 at 64, and 0.3 s per round), rounds alternating between
the models compared, under ``torch.no_grad()`` with ``--threads`` torch threads (default 1). The
models have random weights and scores: speed does not depend on what was learned.

    python benchmarks/eval_speed.py [--rounds 9] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

import popcli
from popcli import recipe as recipes
from popcli.deploy.bake import bake
from popcli.measure import latency, machine
from popcli.models import build_model

MODELS = {  # name: (recipe overrides, input shape [C, H, W])
    "quickstart fc": (["model.arch=fc", "model.hidden=[1024,1024]", "model.batchnorm=true"], (1, 28, 28)),
    "conv4": (["model.arch=conv4"], (3, 32, 32)),
}


def _searched(overrides: list[str], shape: tuple[int, int, int], extra: tuple[str, ...] = ()) -> torch.nn.Module:
    recipe = recipes.load(None, [*overrides, *extra])
    model = build_model(recipe.model, recipe.search, in_channels=shape[0], image_size=shape[1], num_classes=10,
                        seed=recipe.seed)
    with torch.no_grad():
        model(torch.randn(256, *shape))  # training-mode forward: batch-norm statistics that are not the defaults
    return model.eval()


def _interleaved(models: dict[str, torch.nn.Module], x: torch.Tensor, rounds: int) -> dict[str, float]:
    """{name: median over rounds of its p50 ms}, each round timing every model in turn."""
    per: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(rounds):
            for name, model in models.items():
                per[name].append(latency(lambda: model(x), len(x), warmup_s=0.1, min_reps=50 if len(x) == 1 else 10,
                                         min_s=0.3)["p50_ms"])
    return {name: statistics.median(values) for name, values in per.items()}


def loaded_vs_baked(rounds: int, tmp: Path) -> list[dict]:
    rows = []
    for name, (overrides, shape) in MODELS.items():
        recipe = recipes.load(None, overrides)
        path = tmp / f"{name.split()[-1]}.safetensors"
        popcli.save(_searched(overrides, shape), path, recipe=recipe, data_info={"shape": list(shape), "num_classes": 10})
        infer, exact, search = popcli.load(path), popcli.load(path, fold_bn=False), popcli.load(path, mode="search")
        models = {"infer": infer, "infer, fold_bn=False": exact, "search": search, "baked": bake(search)}
        for batch in (1, 64):
            x = torch.randn(batch, *shape)
            with torch.no_grad():
                assert torch.equal(exact(x), search(x)), "unfolded and subnet models must give the same logits"
                torch.testing.assert_close(infer(x), search(x), rtol=1e-5, atol=1e-5)
            ms = _interleaved(models, x, rounds)
            rows.append({"model": name, "batch": batch, **{f"{k} ms": v for k, v in ms.items()},
                         **{f"{k}/baked": ms[k] / ms["baked"] for k in models if k != "baked"}})
    return rows


def searched_vs_dense(rounds: int) -> dict:
    overrides, shape = MODELS["conv4"]
    models = {"searched (eval)": _searched(overrides, shape), "dense": _searched(overrides, shape, ("search.method=dense",))}
    ms = _interleaved(models, torch.randn(1, *shape), rounds)
    return {"model": "conv4", "batch": 1, **{f"{k} ms": v for k, v in ms.items()},
            "searched/dense": ms["searched (eval)"] / ms["dense"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"machine": {**machine(), "torch_threads": torch.get_num_threads()},
                  "loaded_vs_baked": loaded_vs_baked(args.rounds, Path(tmp)), "searched_vs_dense": searched_vs_dense(args.rounds)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']['cpu']}, torch threads {args.threads}, medians of {args.rounds} rounds of p50 (ms)")
    print("popcli.load(path) over popcli.deploy.bake.bake (target <= 1.05); unfolded: fold_bn=False; search: mode='search'")
    print(f"{'model':<14} {'batch':>5} {'baked ms':>9} {'infer/baked':>12} {'unfolded/baked':>15} {'search/baked':>13}")
    for r in result["loaded_vs_baked"]:
        print(f"{r['model']:<14} {r['batch']:>5} {r['baked ms']:>9.4f} {r['infer/baked']:>12.3f} "
              f"{r['infer, fold_bn=False/baked']:>15.3f} {r['search/baked']:>13.3f}")
    r = result["searched_vs_dense"]
    print(f"searched conv4 (eval) batch 1: {r['searched (eval) ms']:.4f} ms, dense conv4 {r['dense ms']:.4f} ms, "
          f"ratio {r['searched/dense']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
