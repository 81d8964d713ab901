"""Step time of a LeNet-300-100 search at 10% kept with and without IteRand (docs/RESULTS.md,
"IteRand"): 469 steps (one epoch), 1 thread, three interleaved rounds; the mean wall time between
step events (a redraw round, once every K steps, included; summary.json's median would hide it).

    nice -n 5 python benchmarks/iterand_step_time.py
"""
import statistics
import time

from popcli import recipe as recipes
from popcli.engine.loop import search

base = ["model.init=scaled_signed_constant", "search.threads=1", "search.epochs=1", "search.density=0.1",
        "search.device=cpu"]
variants = {"off": [], "K=100": ["search.iterand_every_steps=100"], "K=300": ["search.iterand_every_steps=300"]}
res = {k: [] for k in variants}
for r in range(3):
    for name, extra in variants.items():
        stamps = []
        search(recipes.load("recipes/fashion-mnist-paper-sweep.yaml", base + extra), f"runs/iterand/step_time/{name}",
               force=True, on_event=lambda kind, info: stamps.append(time.perf_counter()) if kind == "step" else None)
        res[name].append(1e3 * statistics.fmean(b - a for a, b in zip(stamps, stamps[1:])))
for k, v in res.items():
    print(k, [round(x, 3) for x in v], "median", round(statistics.median(v), 3))
