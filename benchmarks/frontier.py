"""The size-accuracy frontier on Fashion-MNIST: popcli's seed + mask against the compression
people use today, every point measured the same way on this CPU.

    python benchmarks/frontier.py            # the full run (65 min on 2 busy shared cores), resumable
    python benchmarks/frontier.py --tiny     # every kind of point, seconds (the test suite runs it)
    python benchmarks/frontier.py --report   # figure + table from the CSV only

One row per point, appended to ``--csv`` (docs/figures/frontier.csv) as soon as it is measured;
a rerun skips every point whose rows are there (delete rows, or pass a new --methods, to add
points). Columns: test accuracy of the deployed graph in ONNX Runtime on the whole test set,
``file_bytes`` (the deployable file, whole), ``infer_bytes`` (the weights the runtime holds: the
ONNX graph's initializers), ONNX Runtime p50 latency at batch 1 and 64, and the command that
reproduces the point. Points (docs/RESULTS.md states every recipe):

- popcli: ``--methods`` (edge-popup, biprop, signed-supermask, supermask) x {LeNet-300-100,
  quick-start MLP} x ``--densities``; ``popcli search`` then ``popcli export --codec auto``; the
  graph measured is the artifact baked with dead units removed (``popcli export --onnx
  --prune-dead-units`` does the same). ``--init`` and ``--set KEY=VALUE`` add series.
- dense fp32 (safetensors, ONNX) and dense int8 (ONNX Runtime static QDQ) of each base network,
  its learning rate picked by a small sweep (the "tune" rows).
- magnitude pruning: global L1 (torch.nn.utils.prune), iterative through the densities with
  fine-tuning after each step, stored as sparse int8 + xz (baselines.save_sparse_int8).
- a small dense MLP (784-h-10) of about each kept parameter count: fp32, int8 ONNX, int8 + xz.

``--distill RUN`` (with ``--distill-temperature``, ``--distill-weight``) distils every point from
the teacher RUN: the popcli points search with ``search.distill_teacher``, and the baselines'
training and fine-tuning use the same cached teacher logits (``baselines.train(distiller=)``), so
the comparison stays fair; every series gets ", distill T.. w.." in its name.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import fnmatch
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines as bl  # noqa: E402
import frontier_report  # noqa: E402
from frontier_settings import DEFAULT_INIT, FULL_BASES, METHOD_SETS, Base, Settings, tiny_settings  # noqa: E402

import popcli  # noqa: E402
from popcli import recipe as recipes  # noqa: E402
from popcli.deploy import graph as onnx_export  # noqa: E402
from popcli.deploy.int8 import quantize_int8  # noqa: E402
from popcli.deploy.bake import bake, prune_dead_units  # noqa: E402
from popcli.measure import accuracy, latency  # noqa: E402
from popcli.data import load_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["key", "base", "method", "storage", "density", "kept_weights", "test_acc", "file_bytes", "infer_bytes",
           "ort_b1_ms", "ort_b64_ms", "dead_units_removed", "epochs", "wall_s", "threads", "notes", "command"]
# --------------------------------------------------------------------------- measuring


@dataclass
class Context:
    settings: Settings
    work: Path
    csv_path: Path
    done: set[str] = field(default_factory=set)
    rows: list[dict] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # base name -> (splits, x_test, y_test, calibration)


def _data(ctx: Context, base: Base):
    if base.name not in ctx.data:
        recipe = recipes.load(ROOT / base.recipe, list(ctx.settings.data))
        recipe.data.augment = False
        splits = load_data(recipe.data, recipe.seed)
        xs, ys = zip(*splits.test.batches())
        calibration = next(iter(splits.train.batches(0)))[0]
        for x, _ in splits.train.batches(0):  # 512 training images calibrate int8 (as popcli export)
            if len(calibration) >= 512:
                break
            calibration = torch.cat([calibration, x])
        ctx.data[base.name] = (splits, torch.cat(xs), torch.cat(ys), calibration[:512])
    return ctx.data[base.name]


def measure(ctx: Context, base: Base, graph) -> dict:
    """Accuracy (whole test set), initializer bytes and p50 latency at batch 1 and 64 of an ONNX graph."""
    from onnx import numpy_helper

    _, x, y, _ = _data(ctx, base)
    sess = onnx_export.session(graph, ctx.settings.threads)
    predict = lambda batch: onnx_export.run(sess, batch)  # noqa: E731
    timing = {size: latency(lambda b=x[:size].repeat(-(-size // len(x)), 1, 1, 1)[:size]: predict(b), size,
                            warmup_s=min(0.2, ctx.settings.latency_s), min_reps=20 if ctx.settings.latency_s >= 1 else 3,
                            min_s=ctx.settings.latency_s)["p50_ms"] for size in (1, 64)}
    infer = sum(numpy_helper.to_array(init).nbytes for init in graph.graph.initializer)
    return {"test_acc": accuracy(predict, x, y), "infer_bytes": infer, "ort_b1_ms": timing[1], "ort_b64_ms": timing[64],
            "threads": ctx.settings.threads}


def to_graph(model: torch.nn.Module, base: Base, prune: bool = True):
    """(ONNX proto of ``model`` baked as ``popcli export`` bakes it: masks applied, BN folded, dead
    units removed; how many units were removed). Every point's graph comes from torch's
    TorchScript exporter: the same Gemm/Relu graph as popcli's dynamo export, 50x faster to make."""
    import onnx

    gm = bake(model)
    removed = prune_dead_units(gm) if prune else 0
    buffer, sink = io.BytesIO(), io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(gm, (torch.zeros(2, *base.shape),), buffer, dynamo=False, opset_version=onnx_export.OPSET,
                          input_names=[onnx_export.INPUT], output_names=[onnx_export.OUTPUT],
                          dynamic_axes={onnx_export.INPUT: {0: "batch"}, onnx_export.OUTPUT: {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto, removed


def emit(ctx: Context, row: dict) -> None:
    """Append one row to the CSV now (resumability: a finished point is never measured again)."""
    row = {column: row.get(column, "") for column in COLUMNS}
    new = not ctx.csv_path.exists() or ctx.csv_path.stat().st_size == 0
    with open(ctx.csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    ctx.done.add(row["key"])
    ctx.rows.append(row)
    print(f"  {row['key']}: acc {float(row['test_acc']) * 100:.2f}%  file {row['file_bytes']} B  "
          f"b1 {float(row['ort_b1_ms'] or 0):.3f} ms  ({float(row['wall_s'] or 0):.0f} s)", flush=True)


def _redo(ctx: Context) -> str:
    s = ctx.settings
    distill = (f" --distill {s.distill} --distill-temperature {s.distill_temperature:g} --distill-weight "
               f"{s.distill_weight:g}" if s.distill else "")
    return "python benchmarks/frontier.py" + (" --tiny" if s.max_steps else "") + distill


def _distiller(ctx: Context, base: Base):
    """The baselines' distiller under --distill: the teacher's cached logits over the same training
    split the popcli points read (None without --distill)."""
    s = ctx.settings
    if s.distill is None:
        return None
    if ("distill", base.name) not in ctx.data:
        from popcli.engine.distill import load_teacher, make_distiller

        recipe = recipes.load(ROOT / base.recipe, list(s.data))
        ctx.data[("distill", base.name)] = make_distiller(load_teacher(s.distill, popcli.load), s.distill_temperature,
                                                          s.distill_weight, recipe.data, _data(ctx, base)[0],
                                                          torch.device("cpu"), s.distill)
    return ctx.data[("distill", base.name)]


# --------------------------------------------------------------------------- popcli points


def popcli_point(ctx: Context, base: Base, method: str, density: float) -> None:
    from popcli.export import export
    from popcli.engine.loop import search

    s = ctx.settings
    # a series per (method, init): the default init's key is the method alone
    series = s.series(", ".join([method] + ([s.init] if s.init != DEFAULT_INIT else []) + list(s.series_sets)))
    key = f"{base.name}/{series}/artifact/{density:g}"
    if key in ctx.done:
        return
    sets = [f"search.method={method}", f"search.density={density:g}", f"model.init={s.init}",
            f"search.epochs={base.search_epochs}", f"search.threads={s.threads}", *METHOD_SETS.get(method, ()),
            *s.data, *s.extra, *s.series_sets, *s.distill_sets()] + ([f"search.max_steps={s.max_steps}"] if s.max_steps else [])
    run_dir, art = ctx.work / "popcli" / key.replace("/", "_"), ctx.work / "popcli" / (key.replace("/", "_") + ".safetensors")
    start = time.perf_counter()
    summary = search(recipes.load(ROOT / base.recipe, sets), run_dir, force=True)
    report = export(run_dir, art, codec="auto", force=True)
    graph, removed = to_graph(popcli.load(art), base)
    row = measure(ctx, base, graph)
    sets_text = " ".join(f"--set {x}" for x in sets)
    emit(ctx, {**row, "key": key, "base": base.name, "method": series, "storage": f"artifact ({report['mask_codec']})",
               "density": density, "kept_weights": report["kept_weights"], "file_bytes": art.stat().st_size,
               "dead_units_removed": removed, "epochs": summary["epochs"],
               "wall_s": time.perf_counter() - start, "notes": f"init {summary['init']}; search test_acc {summary['test_acc']:.4f}",
               "command": f"popcli search {base.recipe} {sets_text} --out RUN && popcli export RUN -o a.safetensors "
                          f"--onnx a.onnx --prune-dead-units"})


# --------------------------------------------------------------------------- dense baselines


def _train_cfg(ctx: Context, epochs: float, lr: float) -> bl.TrainConfig:
    return bl.TrainConfig(epochs=epochs, lr=lr, max_steps=ctx.settings.max_steps)


def _state_path(ctx: Context, *parts: str) -> Path:
    s = ctx.settings
    tag = [f"distill-T{s.distill_temperature:g}-w{s.distill_weight:g}"] if s.distill else []
    path = ctx.work / "state" / ("_".join([*parts, *tag]) + ".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def dense_tuning(ctx: Context, base: Base) -> float:
    """Train the dense MLP at each swept lr (rows "tune"); the best lr (by test accuracy)."""
    splits, x, y, _ = _data(ctx, base)
    results = {}
    for lr in base.dense_lrs:
        series = ctx.settings.series("dense")
        key, path = f"{base.name}/{series}/tune/lr={lr:g}", _state_path(ctx, base.name, "dense", f"lr{lr:g}")
        if key not in ctx.done or not path.exists():
            start, model = time.perf_counter(), bl.mlp(base.spec)
            bl.train(model, splits.train, _train_cfg(ctx, base.dense_epochs, lr), distiller=_distiller(ctx, base))
            torch.save(model.state_dict(), path)
            emit(ctx, {"key": key, "base": base.name, "method": series, "storage": "tune", "density": 1.0,
                       "kept_weights": bl.weight_count(model), "test_acc": bl.accuracy(model, x, y),
                       "epochs": base.dense_epochs, "wall_s": time.perf_counter() - start, "notes": f"lr {lr:g}",
                       "command": f"{_redo(ctx)} --only '{key}'"})
        results[lr] = float(next(r["test_acc"] for r in reversed(ctx.rows) if r["key"] == key))
    return max(results, key=results.get)


def _load(ctx: Context, base: Base, path: Path, pruned: bool = False) -> torch.nn.Module:
    model = bl.mlp(base.spec)
    if pruned:
        for layer in bl.linear_layers(model):
            torch.nn.utils.prune.identity(layer, "weight")
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def dense_points(ctx: Context, base: Base, lr: float) -> None:
    series = ctx.settings.series("dense")
    keys = [f"{base.name}/{series}/{s}/1" for s in ("fp32 safetensors", "fp32 onnx", "int8 onnx")]
    if all(k in ctx.done for k in keys):
        return
    from safetensors.torch import save_file

    start = time.perf_counter()
    model = _load(ctx, base, _state_path(ctx, base.name, "dense", f"lr{lr:g}"))
    files = ctx.work / "files"
    files.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(files / f"{base.name}_dense.safetensors"))
    graph, _ = to_graph(model, base, prune=False)
    fp32 = measure(ctx, base, graph)
    int8_graph = quantize_int8(graph, _data(ctx, base)[3].split(64))
    sizes = [(files / f"{base.name}_dense.safetensors").stat().st_size, len(graph.SerializeToString()),
             len(int8_graph.SerializeToString())]
    common = {"base": base.name, "method": series, "density": 1.0, "kept_weights": bl.weight_count(model),
              "epochs": base.dense_epochs, "notes": f"lr {lr:g}", "command": f"{_redo(ctx)} --only '{base.name}/dense/*'"}
    for key, row, size in zip(keys, (fp32, fp32, measure(ctx, base, int8_graph)), sizes):
        emit(ctx, {**common, **row, "key": key, "storage": key.split("/")[2], "file_bytes": size,
                   "wall_s": time.perf_counter() - start})


def magnitude_points(ctx: Context, base: Base, lr: float) -> None:
    """Iterative global magnitude pruning through the densities (descending), fine-tuned each step."""
    splits, x, y, _ = _data(ctx, base)
    previous = _state_path(ctx, base.name, "dense", f"lr{lr:g}")
    for step, density in enumerate(sorted(base.densities or ctx.settings.densities, reverse=True)):
        series = ctx.settings.series("magnitude")
        key, path = f"{base.name}/{series}/sparse int8 xz/{density:g}", _state_path(ctx, base.name, "pruned", f"{density:g}")
        if key in ctx.done and path.exists():
            previous = path
            continue
        start = time.perf_counter()
        model = _load(ctx, base, previous, pruned=step > 0)
        bl.prune_global(model, density)
        bl.train(model, splits.train, _train_cfg(ctx, base.finetune_epochs, lr * ctx.settings.finetune_lr_factor),
                 start_epoch=100 + step, distiller=_distiller(ctx, base))
        torch.save(model.state_dict(), path)
        fp32_acc = bl.accuracy(model, x, y)
        file = ctx.work / "files" / f"{base.name}_pruned_{density:g}.spq8.xz"
        file.parent.mkdir(parents=True, exist_ok=True)
        size = bl.save_sparse_int8(model, base.spec, file)
        loaded, _ = bl.load_sparse_int8(file)
        graph, removed = to_graph(loaded, base)
        emit(ctx, {**measure(ctx, base, graph), "key": key, "base": base.name, "method": series,
                   "storage": "sparse int8 xz", "density": density, "kept_weights": bl.nonzero_weights(loaded),
                   "file_bytes": size, "dead_units_removed": removed,
                   "epochs": f"{base.dense_epochs}+{base.finetune_epochs}x{step + 1}", "wall_s": time.perf_counter() - start,
                   "notes": f"fp32 before int8 {fp32_acc:.4f}; fine-tune lr {lr * ctx.settings.finetune_lr_factor:g}",
                   "command": f"{_redo(ctx)} --only '{base.name}/magnitude/*'"})
        previous = path


def small_points(ctx: Context, base: Base, lr: float, density: float) -> None:
    """A 784-h-10 MLP of about the kept weight count of ``base`` at ``density``, trained normally."""
    from safetensors.torch import save_file

    total = bl.weight_count(bl.mlp(base.spec))
    hidden = bl.small_hidden(round(density * total), base.spec.in_features, base.spec.classes)
    series = ctx.settings.series("small dense")
    keys = [f"small/{ctx.settings.series('dense')}/{s}/h={hidden}" for s in ("fp32 safetensors", "int8 onnx", "int8 xz")]
    if all(k in ctx.done for k in keys):
        return
    splits, x, y, calibration = _data(ctx, base)
    start, spec = time.perf_counter(), replace(base.spec, hidden=[hidden], batchnorm=False)
    model = bl.mlp(spec)
    bl.train(model, splits.train, _train_cfg(ctx, ctx.settings.small_epochs, lr), distiller=_distiller(ctx, base))
    files = ctx.work / "files"
    files.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(files / f"small_{hidden}.safetensors"))
    graph, _ = to_graph(model, base, prune=False)
    int8_graph = quantize_int8(graph, calibration.split(64))
    xz = bl.save_sparse_int8(model, spec, files / f"small_{hidden}.spq8.xz")
    xz_graph, _ = to_graph(bl.load_sparse_int8(files / f"small_{hidden}.spq8.xz")[0], base, prune=False)
    params = sum(p.numel() for p in model.parameters())
    sizes = [(files / f"small_{hidden}.safetensors").stat().st_size, len(int8_graph.SerializeToString()), xz]
    for key, graph_, size in zip(keys, (graph, int8_graph, xz_graph), sizes):
        emit(ctx, {**measure(ctx, base, graph_), "key": key, "base": "small", "method": series,
                   "storage": key.split("/")[2], "density": params / total, "kept_weights": params, "file_bytes": size,
                   "epochs": ctx.settings.small_epochs, "wall_s": time.perf_counter() - start,
                   "notes": f"784-{hidden}-10 with biases, {params} parameters, lr {lr:g}; density = parameters / {base.name} weights",
                   "command": f"{_redo(ctx)} --only 'small/dense/*/h={hidden}'"})


# --------------------------------------------------------------------------- driver


def _jobs(ctx: Context):
    """(key pattern, callable) in run order: each base's baselines, then its first popcli method,
    then the other methods (so an early stop still leaves a comparison)."""
    s = ctx.settings
    for base in s.bases:
        lr = lambda base=base: dense_tuning(ctx, base)  # noqa: E731
        yield f"{base.name}/dense/*", lambda base=base, lr=lr: dense_points(ctx, base, lr())
        yield f"{base.name}/magnitude/*", lambda base=base, lr=lr: magnitude_points(ctx, base, lr())
        for density in (d for d in (base.densities or s.densities) if d <= base.small_up_to):
            yield "small/*", lambda base=base, d=density, lr=lr: small_points(ctx, base, lr(), d)
        for density in (base.densities or s.densities) if s.methods else ():
            yield f"{base.name}/{s.methods[0]}/*", lambda b=base, m=s.methods[0], d=density: popcli_point(ctx, b, m, d)
    for base in s.bases:
        for method in s.methods[1:]:
            for density in base.densities or s.densities:
                yield f"{base.name}/{method}/*", lambda b=base, m=method, d=density: popcli_point(ctx, b, m, d)


def read_done(path: Path) -> list[dict]:
    """The CSV's rows, one per key: a point measured again (its state was missing) replaces the earlier row."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list({row["key"]: row for row in csv.DictReader(f)}.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a small synthetic task, seconds (the test suite)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "frontier", help="runs, files and states")
    parser.add_argument("--csv", type=Path, default=None, help="results (default docs/figures/frontier.csv; tiny: WORK/frontier.csv)")
    parser.add_argument("--methods", default=None, help="popcli methods, comma-separated (default edge-popup,biprop,signed-supermask,supermask)")
    parser.add_argument("--densities", default=None, help="kept fractions, comma-separated (default 0.5,...,0.01)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every search, dense and small network (fine-tuning: epochs / 2.5 per step)")
    parser.add_argument("--init", default=None, help="weight init of the popcli points (a new series when not the default)")
    parser.add_argument("--bases", default=None, help="lenet,quickstart (default both)")
    parser.add_argument("--only", default=None, help="run only jobs whose key pattern matches this glob")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default 1)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="recipe override for the popcli points (a new series, e.g. model.width=0.5)")
    parser.add_argument("--distill", default=None, metavar="RUN",
                        help="distil every point from this teacher (a run folder, checkpoint or artifact): popcli points "
                             "with search.distill_teacher, the baselines' training and fine-tuning with the same "
                             "cached logits (new series, ', distill T.. w..')")
    parser.add_argument("--distill-temperature", type=float, default=4.0, help="with --distill: T (default 4)")
    parser.add_argument("--distill-weight", type=float, default=0.5, help="with --distill: w (default 0.5)")
    parser.add_argument("--report", action="store_true", help="only write the figure and print the table (reads the CSV, measures nothing)")
    parser.add_argument("--matrix", action="store_true", help="only print one row per series, one column per kept fraction (reads the CSV, measures nothing)")
    parser.add_argument("--figure", type=Path, default=None, help="figure path (default next to the CSV)")
    args = parser.parse_args(argv)
    settings = tiny_settings() if args.tiny else Settings(bases=FULL_BASES)
    if args.methods:
        settings = replace(settings, methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()))
    if args.densities:
        settings = replace(settings, densities=tuple(float(d) for d in args.densities.split(",") if d.strip()))
    if args.bases:
        settings = replace(settings, bases=tuple(b for b in settings.bases if b.name in args.bases.split(",")))
    if args.init:
        settings = replace(settings, init=args.init)
    if args.epochs:
        bases = tuple(replace(b, search_epochs=args.epochs, dense_epochs=args.epochs, finetune_epochs=max(1, args.epochs // 2.5))
                      for b in settings.bases)
        settings = replace(settings, bases=bases, small_epochs=args.epochs)
    if args.threads:
        settings = replace(settings, threads=args.threads)
    settings = replace(settings, series_sets=tuple(args.extra))
    if args.distill:  # absolute: the popcli points record it in their recipes, the commands repeat it
        settings = replace(settings, distill=str(Path(args.distill).expanduser().absolute()),
                           distill_temperature=args.distill_temperature, distill_weight=args.distill_weight)
    args.work.mkdir(parents=True, exist_ok=True)
    csv_path = args.csv or (args.work / "frontier.csv" if args.tiny else ROOT / "docs" / "figures" / "frontier.csv")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    ctx = Context(settings, args.work, csv_path, rows=read_done(csv_path))
    ctx.done = {row["key"] for row in ctx.rows}
    torch.set_num_threads(settings.threads)
    if not (args.report or args.matrix):  # --matrix, like --report, only reads the CSV
        started = time.perf_counter()
        for pattern, job in _jobs(ctx):
            if args.only and not (fnmatch.fnmatch(pattern, args.only) or fnmatch.fnmatch(args.only, pattern)):
                continue
            job()
        print(f"frontier: {len(ctx.rows)} rows in {csv_path} ({time.perf_counter() - started:.0f} s this run)", flush=True)
    figure = args.figure or csv_path.with_suffix(".png")
    frontier_report.figure(ctx.rows, figure)
    print(frontier_report.matrix(ctx.rows) if args.matrix else frontier_report.table(ctx.rows))
    print(frontier_report.headline(ctx.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
