"""popcli sweep and popcli plot: grids, resumable points, results.csv, figures."""

import csv
import json
import subprocess
import sys

import pytest

from popcli.errors import RecipeError
from popcli.sweep.plot import PlotError, draw, read_results
from popcli.errors import Interrupted
from popcli.sweep.grid import parse_grid, points, run_sweep

BASE = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=256",
        "data.test_size=64", "data.batch_size=32", "model.arch=fc", "model.hidden=[32]", "search.lr=0.05",
        "search.epochs=1"]


def test_parse_grid_and_points():
    grid = parse_grid(["search.density=0.1,0.5", "model.hidden=[8,8],[16]"])
    assert grid == [("search.density", ["0.1", "0.5"]), ("model.hidden", ["[8,8]", "[16]"])]
    assert points(grid)[1] == ["search.density=0.1", "model.hidden=[16]"] and len(points(grid)) == 4
    for bad in (["density"], ["search.density="], ["search.density=0.1", "search.density=0.2"]):
        with pytest.raises(RecipeError):
            parse_grid(bad)


def test_sweep_runs_skips_and_resumes(tmp_path):
    grid = parse_grid(["search.density=0.3,0.7", "search.method=edge-popup,supermask"])
    report = run_sweep(None, grid, tmp_path, overrides=BASE)
    assert (report["ran"], report["skipped"], report["rows"]) == (4, 0, 4)
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["search.method"], r["search.density"]) for r in rows} == {(m, d) for m in ("edge-popup", "supermask")
                                                                         for d in ("0.3", "0.7")}
    assert all(0 <= float(r["test_acc"]) <= 1 and int(r["params_kept"]) > 0 for r in rows)
    again = run_sweep(None, grid, tmp_path, overrides=BASE)
    assert (again["ran"], again["skipped"]) == (0, 4)
    # the same recipe reached through another grid is the same point: skipped, not re-run
    assert run_sweep(None, parse_grid(["search.density=0.3"]), tmp_path, overrides=BASE)["skipped"] == 1

    longer = parse_grid(["search.density=0.5"])
    steps = []
    with pytest.raises(Interrupted):
        run_sweep(None, longer, tmp_path, overrides=[*BASE, "search.epochs=3"],
                  on_event=lambda kind, info: steps.append(1) if kind == "step" else None,
                  should_stop=lambda: len(steps) >= 5)
    resumed = run_sweep(None, longer, tmp_path, overrides=[*BASE, "search.epochs=3"])
    assert resumed["ran"] == 1 and resumed["rows"] == 5


def test_sweep_errors_before_any_work(tmp_path):
    with pytest.raises(RecipeError, match="search.density"):
        run_sweep(None, parse_grid(["search.density=0.5,2.0"]), tmp_path, overrides=BASE)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_plot_figures_and_errors(tmp_path):
    run_sweep(None, parse_grid(["search.density=0.3,0.7", "model.width=0.5,1"]), tmp_path, overrides=BASE)
    run_sweep(None, parse_grid(["search.method=dense"]), tmp_path, overrides=BASE)
    figures = draw(tmp_path / "results.csv", tmp_path / "figs")
    assert {f.rsplit("/", 1)[-1] for f in figures} == {"accuracy_vs_density.png", "accuracy_vs_width.png",
                                                        "accuracy_vs_params.png"}
    for figure in figures:
        with open(figure, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(read_results(tmp_path / "results.csv")) == 5
    with pytest.raises(PlotError, match="not found"):
        draw(tmp_path / "missing.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PlotError, match="not a popcli results.csv"):
        draw(tmp_path / "other.csv")


def test_sweep_and_plot_cli(tmp_path):
    args = [a for o in BASE for a in ("--set", o)]
    result = subprocess.run([sys.executable, "-m", "popcli", "sweep", *args, "--grid", "search.density=0.4,0.6",
                             "--out", str(tmp_path), "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ran"] == 2 and report["figures"]
    shown = subprocess.run([sys.executable, "-m", "popcli", "plot", str(tmp_path / "results.csv"), "-o",
                            str(tmp_path / "f")], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "accuracy_vs_density.png" in shown.stdout
    bad = subprocess.run([sys.executable, "-m", "popcli", "sweep", "--grid", "nonsense", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--grid" in bad.stderr and "Traceback" not in bad.stderr


def test_seed_grid_one_line_per_method_and_init(tmp_path):
    from popcli.sweep import groups

    grid = parse_grid(["seed=0,1,2", "search.method=edge-popup,supermask", "model.init=signed_constant,kaiming_normal",
                       "search.density=0.3,0.7"])
    report = run_sweep(None, grid, tmp_path, overrides=[*BASE, "search.max_steps=2", "search.threads=1"])
    assert report["ran"] == 24
    rows = read_results(tmp_path / "results.csv")
    assert {"search.max_steps", "epochs_run"} <= set(rows[0]) and {r["search.max_steps"] for r in rows} == {2}
    assert {r["epochs_run"] for r in rows} == {2 / 8}  # 256 samples / batch 32 = 8 steps per epoch
    by = [k for k in groups.varying(rows) if k not in ("search.density", "seed")]
    found = groups.lines(rows, "search.density", groups.splitting(rows, by))
    assert sorted(line.label for line in found) == ["edge-popup, kaiming_normal", "edge-popup, signed_constant",
                                                    "supermask, kaiming_normal", "supermask, signed_constant"]
    for line in found:
        assert [(p.x, p.n) for p in line.points] == [(0.3, 3), (0.7, 3)]
        here = [r["test_acc"] for r in rows if (r["search.method"], r["model.init"]) == tuple(v for _, v in line.key)
                and r["search.density"] == 0.3]
        assert line.points[0].mean == pytest.approx(sum(here) / 3, abs=1e-12)
    assert draw(tmp_path / "results.csv")[0].endswith("accuracy_vs_density.png")


def test_results_record_every_varying_key_and_max_steps(tmp_path):
    run_sweep(None, parse_grid(["search.max_steps=2,4", "search.momentum=0.5,0.9"]), tmp_path, overrides=BASE)
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert "search.momentum" in rows[0] and "search.nesterov" not in rows[0]  # varies -> recorded; fixed -> not
    assert sorted((r["search.max_steps"], r["search.momentum"], r["steps"]) for r in rows) == [
        ("2", "0.5", "2"), ("2", "0.9", "2"), ("4", "0.5", "4"), ("4", "0.9", "4")]
    figures = draw(tmp_path / "results.csv")
    assert {f.rsplit("/", 1)[-1] for f in figures} == {"accuracy_vs_max_steps.png", "accuracy_vs_momentum.png"}
