"""popcli sweep -j N and the submitit launcher: points at once, failures isolated, same results.csv."""

import csv
import sys

import pytest

from popcli import recipe as recipes
from popcli.sweep import pool as sweep_pool
from popcli.errors import UsageError
from popcli.sweep.grid import parse_grid, run_sweep

BASE = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=128",
        "data.test_size=64", "data.batch_size=32", "model.arch=fc", "model.hidden=[16]", "search.lr=0.05",
        "search.max_steps=2"]


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No MNIST anywhere: a point on it fails at run time (after the grid was checked)."""
    monkeypatch.setenv("POPCLI_DATA", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("popcli.data.resolve.SYSTEM_ROOTS", ())


def _rows(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failed_point_does_not_stop_the_others(tmp_path, no_data, jobs):
    grid = parse_grid(["data.dataset=mnist,synthetic", "search.density=0.3,0.7"])
    report = run_sweep(None, grid, tmp_path, overrides=[*BASE, "search.threads=1"], jobs=jobs)
    failed = sorted(tuple(p["point"]) for p in report["failed"])
    # (worker processes do not see the patched SYSTEM_ROOTS; /usr/share/datasets holds no MNIST either)
    assert failed == [("data.dataset=mnist", "search.density=0.3"), ("data.dataset=mnist", "search.density=0.7")]
    assert all("mnist not found" in p["error"] for p in report["failed"]), report["failed"]
    assert report["ran"] == 4 - len(failed)
    assert {(r["data.dataset"], r["search.density"]) for r in _rows(tmp_path)} >= {("synthetic", "0.3"), ("synthetic", "0.7")}
    again = run_sweep(None, grid, tmp_path, overrides=[*BASE, "search.threads=1"], jobs=jobs)
    assert again["skipped"] == 4 - len(failed)  # finished points stay finished, failed ones are retried


def test_parallel_results_equal_serial(tmp_path):
    grid = parse_grid(["search.density=0.3,0.7", "seed=0,1"])
    serial = run_sweep(None, grid, tmp_path / "a", overrides=[*BASE, "search.threads=1"])
    parallel = run_sweep(None, grid, tmp_path / "b", overrides=[*BASE, "search.threads=1"], jobs=2)
    assert (serial["ran"], parallel["ran"], parallel["failed"]) == (4, 4, [])
    key = lambda r: r["run"]  # noqa: E731
    a, b = sorted(_rows(tmp_path / "a"), key=key), sorted(_rows(tmp_path / "b"), key=key)
    assert [r["run"] for r in a] == [r["run"] for r in b]
    assert [r["test_acc"] for r in a] == [r["test_acc"] for r in b]  # CPU searches are exact: same figures


def test_worker_env_gpu_per_worker_and_cpu_split(monkeypatch):
    recipe = recipes.load(None, ["search.device=auto"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert [sweep_pool.worker_env(s, 4, recipe)[0]["CUDA_VISIBLE_DEVICES"] for s in range(4)] == ["3", "5", "3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    env, extra = sweep_pool.worker_env(1, 2, recipe)
    assert extra == ["search.threads=4"] and env["OMP_NUM_THREADS"] == "4"
    assert sweep_pool.worker_env(0, 2, recipes.load(None, ["search.threads=1"]))[1] == []  # the recipe's choice wins


def test_submitit_launcher(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    grid = parse_grid(["search.density=0.3,0.7"])
    report = run_sweep(None, grid, tmp_path, overrides=BASE, launcher="submitit", launcher_options={"cluster": "debug"})
    assert (report["ran"], report["failed"]) == (2, []) and len(_rows(tmp_path)) == 2
    monkeypatch.setitem(sys.modules, "submitit", None)  # not installed
    with pytest.raises(UsageError, match="popcli\\[cluster\\]"):
        run_sweep(None, parse_grid(["search.density=0.4"]), tmp_path, overrides=BASE, launcher="submitit")


def test_cli_sweep_exits_1_when_a_point_failed(tmp_path, no_data):
    from typer.testing import CliRunner

    from popcli.cli import get_app

    args = ["sweep", *(a for o in BASE for a in ("--set", o)), "--grid", "data.dataset=mnist", "--out", str(tmp_path)]
    result = CliRunner().invoke(get_app(), args)
    assert result.exit_code == 1, result.stderr
    assert "failed" in result.stderr and "mnist not found" in result.stderr and "rerun the sweep" in result.stderr
