"""Step time of a LeNet-300-100 search at 10% kept with and without a distillation teacher
(docs/RESULTS.md): 300 steps, 1 thread, three interleaved rounds, median of summary.json's
step_time_ms. Needs the teacher run of docs/RESULTS.md in runs/distill/teacher-lenet.

    python benchmarks/distill_step_time.py
"""
import statistics
from popcli import recipe as recipes
from popcli.engine.loop import search
base = ["model.arch=fc", "model.hidden=[300,100]", "model.batchnorm=false", "search.threads=1", "search.epochs=1",
        "search.max_steps=300", "search.density=0.1", "search.device=cpu"]
res = {"plain": [], "distill": []}
for r in range(3):
    for name, extra in (("plain", []), ("distill", ["search.distill_teacher=runs/distill/teacher-lenet",
                                                    "search.distill_temperature=2", "search.distill_weight=0.3"])):
        s = search(recipes.load(None, base + extra), f"runs/distill/step_time/{name}", force=True)
        res[name].append(s["step_time_ms"])
for k, v in res.items():
    print(k, [round(x, 3) for x in v], "median", round(statistics.median(v), 3))
