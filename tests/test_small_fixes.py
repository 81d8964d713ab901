"""The small ones of issue 20, one test each: help usage lines, "1 thread", the int8 speed wording,
wall time over resumed sessions, the dense baseline's density, the width figure's legend
(section 3); the 5000-digit seed, the empty IDX file, temporaries of killed exports, sweep
workers of a killed sweep, Ctrl-C after the artifact is written (section 5)."""

import fcntl
import gzip
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import popcli
from popcli import recipe as recipes
from popcli.cli import tables
from popcli.artifact import inspect
from popcli.engine.loop import search
from popcli.export import export
from popcli.errors import PopcliError, SearchInterrupted
from popcli.storage import atomic

from cli_helpers import run

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SYNTH = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=128",
         "data.test_size=64", "data.batch_size=32", "model.arch=fc", "model.hidden=[16]", "search.lr=0.05",
         "search.threads=1", "search.device=cpu"]


def cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "popcli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small") / "run"
    search(recipes.load(None, [*SYNTH, "search.epochs=1"]), folder)
    return folder


# --------------------------------------------------------------------------- section 3, the small ones


def test_usage_lines_show_arguments_as_written():
    expected = {"search": "search [OPTIONS] [RECIPE]", "inspect": "inspect [OPTIONS] FILE",
                "eval": "eval [OPTIONS] ARTIFACT_OR_ONNX", "sweep": "sweep [OPTIONS] [RECIPE]",
                "plot": "plot [OPTIONS] RESULTS_CSV", "runs": "runs [OPTIONS] [FOLDER]",
                "models": "models [OPTIONS] [PATTERN]", "recipe show": "recipe show [OPTIONS] [RECIPE]"}
    for command, usage in expected.items():
        first = run(*command.split(), "--help").stdout.splitlines()[0]  # "Usage: <prog> search [OPTIONS] [RECIPE]"
        assert first.split(maxsplit=2)[2] == usage and "[[" not in first and "{" not in first, first


def test_one_thread_is_singular(run_dir):
    import torch

    from popcli.engine.runtime import make_runtime

    threads = torch.get_num_threads()
    try:
        assert make_runtime("cpu", threads=1).describe() == "cpu, 1 thread"
    finally:
        torch.set_num_threads(threads)
    assert tables.where({"device": "cpu", "threads": 1, "amp": None}) == "cpu, 1 thread"
    assert tables.where({"device": "cpu, 2 threads"}) == "cpu, 2 threads"  # a summary written before 0.3
    export(run_dir, run_dir.parent / "a.safetensors")
    shown = run("eval", run_dir.parent / "a.safetensors", "--threads", "1", "--batch-sizes", "1")
    assert "1 thread," in shown.stdout and "1 threads" not in shown.stdout, shown.stdout


def test_int8_speed_says_faster_or_slower():
    faster = {"batch64_fp32_ms": 2.0, "batch64_int8_ms": 1.0}
    slower = {"batch64_fp32_ms": 1.0, "batch64_int8_ms": 1.25}
    assert tables.int8_speed(faster) == "1.00 ms vs fp32 2.00 ms: int8 is 2.00x faster"
    assert tables.int8_speed(slower) == "1.25 ms vs fp32 1.00 ms: int8 is 1.25x slower"


def test_summary_wall_time_counts_every_session(tmp_path):
    recipe = recipes.load(None, [*SYNTH, "search.epochs=2"])
    steps = []

    def slow(kind, info):
        if kind == "step":
            steps.append(info["step"])
            time.sleep(0.25)  # the first session lasts at least 5 x 0.25 s

    with pytest.raises(SearchInterrupted):
        search(recipe, tmp_path / "run", on_event=slow, should_stop=lambda: len(steps) >= 5)
    summary = search(recipes.load(None, [*SYNTH, "search.epochs=2"]), tmp_path / "run", resume=True)
    assert summary["wall_s"] >= 1.25 + summary["session_wall_s"] - 0.01
    assert summary["session_wall_s"] < summary["wall_s"]
    assert "this session" in _render(tables.summary_table(summary))


def _render(table) -> str:
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(table)
    return console.export_text()


def test_dense_baseline_reports_density_one(tmp_path):
    summary = search(recipes.load(None, [*SYNTH, "search.method=dense", "search.max_steps=2"]), tmp_path / "dense")
    assert summary["density"] == 1.0 and summary["kept_fraction"] == 1.0


def test_width_figure_legend_is_not_over_the_lines(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import csv

    from popcli.sweep import plot, runs_index

    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", *runs_index.RECIPE_COLUMNS, *runs_index.SUMMARY_COLUMNS])
        writer.writeheader()
        for i, (width, density) in enumerate((w, d) for w in (0.25, 0.5, 1.0, 2.0) for d in (0.1, 0.3, 0.5, 0.7)):
            writer.writerow({"run": f"r{i}", "seed": 0, "model.arch": "conv4", "model.init": "signed_constant",
                             "model.width": width, "data.dataset": "cifar10", "search.method": "edge-popup",
                             "search.density": density, "test_acc": 0.4 + 0.1 * width + 0.05 * density,
                             "params_kept": int(1e6 * width * width * density)})
    overlaps = {}
    save = plot._save

    def check(plt, fig, where):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                overlaps[where.name] = legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        save(plt, fig, where)

    monkeypatch.setattr(plot, "_save", check)
    plot.draw(path, tmp_path)
    assert overlaps.keys() >= {"accuracy_vs_width.png", "accuracy_vs_density.png", "accuracy_vs_params.png"}
    assert not any(overlaps.values()), overlaps


# --------------------------------------------------------------------------- section 5, the small ones


def test_a_5000_digit_seed_is_named(tmp_path):
    huge = "7" * 5000
    for result in (run("recipe", "show", "--set", f"seed={huge}"),):
        assert result.exit_code == 2 and "seed" in result.stderr and len(result.stderr.splitlines()) == 1
    (tmp_path / "r.yaml").write_text(f"seed: {huge}\n")
    shown = run("recipe", "show", tmp_path / "r.yaml")
    assert shown.exit_code == 2 and "line 1: seed" in shown.stderr and len(shown.stderr) < 300, shown.stderr
    with pytest.raises(PopcliError, match="seed.*about 5071 digits"):
        popcli.create_model("fc", seed=7 ** 6000)
    assert "seed: 100000000000000000000000000000 is out of range" in run("recipe", "show", "--set", "seed=1" + "0" * 29).stderr


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_an_idx_file_of_zero_images_is_named(tmp_path):
    for f in FMNIST.iterdir():
        (tmp_path / f.name).symlink_to(f)
    empty = tmp_path / "t10k-images-idx3-ubyte.gz"
    empty.unlink()
    empty.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 0, 28, 28)))
    result = run("search", "--data-dir", tmp_path, "--set", "search.max_steps=1", "--out", tmp_path / "r")
    assert result.exit_code == 1 and str(empty) in result.stderr and "0 images" in result.stderr, result.stderr


def test_a_killed_exports_temporary_file_is_removed_by_the_next_write(run_dir, tmp_path, monkeypatch):
    out = tmp_path / "k.safetensors"
    killed = cli("export", run_dir, "-o", out, env={"POPCLI_FAULT": "kill@write:k.safetensors"})
    assert killed.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".k.safetensors.*.tmp"))
    assert len(left) == 1 and not out.exists()
    monkeypatch.setattr(atomic, "STALE_AFTER_S", 0.0)  # (else: any such file older than 5 s)
    export(run_dir, out)
    assert out.is_file() and not list(tmp_path.glob(".*.tmp"))


def test_a_live_writers_temporary_file_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "STALE_AFTER_S", 0.0)
    live = tmp_path / atomic.temp_name("f.bin")
    with open(live, "wb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # what a writer holds until it renames
        assert atomic.remove_stale_temps(tmp_path / "f.bin") == []
        atomic.write_atomic(tmp_path / "f.bin", b"new")
        assert live.exists() and (tmp_path / "f.bin").read_bytes() == b"new"
    assert atomic.remove_stale_temps(tmp_path / "f.bin") == [live] and not live.exists()
    (tmp_path / ".g.bin.0123abcd.tmp").write_bytes(b"")  # another name's: never touched
    assert atomic.remove_stale_temps(tmp_path / "f.bin") == []


def _workers(marker: str) -> list[int]:
    """pids of live processes whose command line holds ``marker`` (a sweep's folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().split(") ")[-1][:1]
            except OSError:
                continue
            if marker in cmdline and " search " in cmdline and state != "Z":
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_a_parallel_sweep_kills_its_workers(tmp_path):
    out = tmp_path / "sweep"
    args = [a for o in [*SYNTH, "search.epochs=100000"] for a in ("--set", o)]
    sweep = subprocess.Popen([sys.executable, "-m", "popcli", "sweep", *args, "--grid", "search.density=0.3,0.7",
                              "-j", "2", "--out", str(out), "-q", "--no-plot"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while len(_workers(str(out))) < 2 or not list(out.glob("runs/*/last.pt")):
            assert time.time() < deadline and sweep.poll() is None, "the sweep's workers did not start"
            time.sleep(0.5)
        sweep.kill()  # SIGKILL: no handler in the sweep runs
        sweep.wait()
        deadline = time.time() + 60
        while _workers(str(out)):
            assert time.time() < deadline, f"workers still running: {_workers(str(out))}"
            time.sleep(0.5)
    finally:
        sweep.kill()
        for pid in _workers(str(out)):
            os.kill(pid, signal.SIGKILL)


def test_follow_parent_is_a_no_op_outside_workers_and_clears_its_variable(monkeypatch):
    from popcli.sweep import pool

    monkeypatch.delenv(pool.PARENT_ENV, raising=False)
    pool.follow_parent()  # nothing to follow
    monkeypatch.setenv(pool.PARENT_ENV, str(os.getppid()))
    pool.follow_parent()
    assert pool.PARENT_ENV not in os.environ  # data loader processes of a worker do not inherit it


def test_ctrl_c_after_the_artifact_is_written_is_not_a_failure(run_dir, tmp_path):
    out = tmp_path / "c.safetensors"
    done = cli("export", run_dir, "-o", out, env={"POPCLI_FAULT": "sigint@rename:c.safetensors"})
    assert done.returncode == 0 and "nothing was left to stop" in done.stderr, done.stderr
    assert inspect(out)["verified"]
    out.unlink()
    stopped = cli("export", run_dir, "-o", out, "--onnx", tmp_path / "c.onnx",
                  env={"POPCLI_FAULT": "sigint@rename:c.safetensors"})
    assert stopped.returncode == 130 and f"{out} written (complete and verified); not written: " in stopped.stderr
    assert inspect(out)["verified"] and not (tmp_path / "c.onnx").exists()


def test_search_and_eval_give_the_callers_thread_count_back(tmp_path, run_dir):
    """torch's thread count is process-wide: search.threads and eval --threads apply to that call only."""
    import torch

    from popcli.deploy.evaluate import evaluate

    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    summary = search(recipes.load(None, [*SYNTH, "search.max_steps=2", f"search.threads={wanted}"]), tmp_path / "t")
    assert summary["threads"] == wanted and torch.get_num_threads() == before
    export(run_dir, tmp_path / "t.safetensors")
    report = evaluate(tmp_path / "t.safetensors", threads=wanted, batch_sizes="1", limit=8)
    assert report["threads"] == wanted and torch.get_num_threads() == before
    with pytest.raises(PopcliError):  # an error inside the call gives it back too
        search(recipes.load(None, [*SYNTH, "search.max_steps=2", f"search.threads={wanted}"]), tmp_path / "t")
    assert torch.get_num_threads() == before
