"""The CLI as a new user meets it (issue 14): data folders, exit codes, resume edge cases, foreign
files, file modes, strict JSON, tables. Commands run in-process (typer's CliRunner) for speed."""

import json
import os
import re
import stat
import tomllib
from pathlib import Path

import pytest
from rich.console import Console

from popcli import errors
from popcli.cli import tables
from popcli.data import resolve

from cli_helpers import one_line_error, run

ROOT = Path(__file__).resolve().parent.parent
FMNIST = Path("/usr/share/datasets/fashion-mnist")
SYNTH = ["--set", "data.dataset=synthetic", "--set", "data.shape=[1,8,8]", "--set", "data.num_classes=4",
         "--set", "data.train_size=128", "--set", "data.test_size=64", "--set", "data.batch_size=32",
         "--set", "model.arch=fc", "--set", "model.hidden=[16]", "--set", "search.lr=0.05", "--set", "search.threads=1"]


def _no_nan(token):
    raise ValueError(f"non-standard JSON token {token}")


def strict(text: str):
    """json.loads that refuses NaN / Infinity, as jq or a JavaScript parser would."""
    return json.loads(text, parse_constant=_no_nan)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finished") / "run"
    result = run("search", *SYNTH, "--set", "search.max_steps=6", "--set", "search.epochs=2", "--out", folder, "--json")
    assert result.exit_code == 0, result.stderr
    return folder


# --------------------------------------------------------------------------- data folders


def test_explicit_data_dir_without_the_data_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["--data-dir", empty], ["--set", f"data.data_dir={empty}"]):
        result = run("search", "--set", "search.max_steps=1", *args, "--out", tmp_path / "r")
        one_line_error(result, 1, f"fashion-mnist not found in data folder '{empty}'")
        assert "/usr/share" not in result.stderr  # it names that folder alone: no silent fall-back
    assert not (tmp_path / "r" / "last.pt").exists()


def test_error_hints_name_real_flags():
    search_help = run("search", "--help").stdout
    sweep_help = run("sweep", "--help").stdout
    hints = " ".join(resolve._HINTS.values())
    for flag in set(re.findall(r"--[a-z][a-z-]+", hints)):
        assert flag in search_help and flag in sweep_help, flag


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_data_folder_recorded_and_moved_data_still_evaluates(tmp_path, monkeypatch):
    first = tmp_path / "data-a"
    first.mkdir()
    for f in FMNIST.iterdir():
        (first / f.name).symlink_to(f)
    run_dir = tmp_path / "run"
    result = run("search", "--data-dir", first, "--set", "search.max_steps=2", "--set", "search.threads=1",
                 "--set", "model.arch=fc", "--out", run_dir, "--json")
    assert result.exit_code == 0, result.stderr
    summary = strict(result.stdout)
    assert summary["data_folder"] == str(first) == strict((run_dir / "summary.json").read_text())["data_folder"]
    assert summary["train_size"] == 60000 and summary["test_size"] == 10000 and summary["val_size"] == 0
    assert run("export", run_dir, "-o", tmp_path / "a.safetensors").exit_code == 0
    moved = tmp_path / "data-b"
    first.rename(moved)  # the artifact still names data-a
    monkeypatch.setenv("POPCLI_DATA", str(moved))
    result = run("eval", tmp_path / "a.safetensors", "--limit", "32", "--batch-sizes", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert strict(result.stdout)["test_images"] == 32
    # an explicit --data-dir is still obeyed to the letter
    one_line_error(run("eval", tmp_path / "a.safetensors", "--data-dir", first), 1, "does not exist")


# --------------------------------------------------------------------------- exit codes


def test_exit_code_per_error_class_documented():
    usage = {errors.UsageError, errors.RecipeError, errors.ModelError, errors.RunExists, errors.OutputExists}
    for cls in (errors.PopcliError, errors.DataError, errors.RunError, errors.ArtifactError, errors.TrainingDiverged):
        assert cls.exit_code == 1, cls
    for cls in usage:
        assert cls.exit_code == 2, cls
    assert errors.Interrupted.exit_code == 130
    from popcli.errors import SearchInterrupted

    assert issubclass(SearchInterrupted, errors.Interrupted)
    shown = " ".join(run("--help").stdout.split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    for text in (shown, readme):
        for fragment in ("1 the work failed", "2 usage error", "130 interrupted"):
            assert fragment in text, fragment


def test_usage_vs_runtime_codes(tmp_path, finished_run):
    one_line_error(run("search", *SYNTH, "--out", finished_run), 2, "--force")  # a run is there: usage
    one_line_error(run("search", "--set", "search.bogus=1"), 2, "search.bogus")
    one_line_error(run("inspect", tmp_path / "missing.safetensors"), 1, "not found")  # a missing file: runtime
    (tmp_path / "x.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")  # a corrupt artifact
    assert run("inspect", tmp_path / "x.safetensors").exit_code == 1


# --------------------------------------------------------------------------- resume edge cases


def test_resume_of_finished_run_keeps_summary_and_prints_strict_json(finished_run):
    before = (finished_run / "summary.json").read_bytes()
    result = run("search", "--resume", "--out", finished_run, "--json")
    assert result.exit_code == 0, result.stderr
    resumed = strict(result.stdout)
    assert resumed == strict(before.decode())  # the saved result, not a poorer re-measurement
    assert resumed["step_time_ms"] is not None and resumed["test_loss"] is not None
    assert (finished_run / "summary.json").read_bytes() == before
    shown = run("search", "--resume", "--out", finished_run)
    assert shown.exit_code == 0 and "already finished" in shown.stderr and "test accuracy" in shown.stdout


def test_stopped_before_first_checkpoint_can_rerun(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("seed: 0\n")  # what a double Ctrl-C before the first checkpoint leaves
    result = run("search", *SYNTH, "--set", "search.max_steps=2", "--resume", "--out", run_dir, "--json")
    assert result.exit_code == 0, result.stderr  # --resume of a run that never checkpointed starts it
    assert strict(result.stdout)["steps"] == 2 and "dataset: synthetic" in (run_dir / "recipe.yaml").read_text()
    assert "no checkpoint in" in result.stderr and "starting the run" in result.stderr
    result = run("search", *SYNTH, "--set", "search.max_steps=2", "--out", run_dir, "--force", "--json")
    assert result.exit_code == 0, result.stderr


def test_resume_of_missing_folder(tmp_path):
    result = run("search", "--resume", "--out", tmp_path / "MISSING")
    one_line_error(result, 1, "nothing to resume")
    assert "recipe" in result.stderr and "pass a YAML file" not in result.stderr


# --------------------------------------------------------------------------- foreign files, modes


def test_inspect_says_what_a_foreign_file_is(tmp_path, finished_run):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "model.onnx")
    one_line_error(run("inspect", tmp_path / "model.onnx"), 1, "is an ONNX file, not a popcli artifact")
    one_line_error(run("inspect", finished_run / "last.pt"), 1, "is a popcli search checkpoint, not a popcli artifact")
    one_line_error(run("eval", finished_run / "last.pt"), 1, "is a popcli search checkpoint")
    import torch

    torch.save({"a": torch.zeros(2)}, tmp_path / "other.pt")
    one_line_error(run("inspect", tmp_path / "other.pt"), 1, "is a PyTorch file")


@pytest.mark.parametrize("umask", [0o027])  # neither the default 022 nor mkstemp's 0600
def test_outputs_respect_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        run_dir = tmp_path / "run"
        assert run("search", *SYNTH, "--set", "search.max_steps=4", "--out", run_dir, "--quiet").exit_code == 0
        result = run("export", run_dir, "-o", tmp_path / "a.safetensors", "--onnx", tmp_path / "a.onnx")
        assert result.exit_code == 0, result.stderr
        sweep = run("sweep", *SYNTH, "--set", "search.max_steps=2", "--grid", "search.density=0.5",
                    "--out", tmp_path / "sweep", "--quiet")
        assert sweep.exit_code == 0, sweep.stderr
    finally:
        os.umask(previous)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"recipe.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "a.safetensors", "a.onnx",
            "results.csv"} <= names, names
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, (path, oct(path.stat().st_mode))


# --------------------------------------------------------------------------- JSON and tables


def test_every_json_output_is_strict(tmp_path, finished_run):
    for line in (finished_run / "metrics.jsonl").read_text().splitlines():
        strict(line)
    strict((finished_run / "summary.json").read_text())
    art = tmp_path / "a.safetensors"
    for args in (["export", finished_run, "-o", art, "--json"], ["inspect", art, "--json"], ["models", "--json"],
                 ["eval", art, "--batch-sizes", "1", "--limit", "16", "--json"]):
        result = run(*args)
        assert result.exit_code == 0, (args, result.stderr)
        strict(result.stdout)
    from popcli.storage import strict_json as jsonsafe

    assert strict(jsonsafe.dumps({"a": float("nan"), "b": [float("inf")]})) == {"a": None, "b": [None]}


def test_sweep_json_keeps_progress_on_stderr(tmp_path):
    result = run("sweep", *SYNTH, "--set", "search.max_steps=2", "--grid", "search.density=0.5",
                 "--out", tmp_path, "--json", "--no-plot")
    assert result.exit_code == 0, result.stderr
    assert strict(result.stdout)["ran"] == 1
    assert "point 1/1" in result.stderr and "searching on synthetic" in result.stderr


def _render(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_tables_say_what_they_mean(finished_run):
    summary = strict((finished_run / "summary.json").read_text())
    text = _render(tables.summary_table({**summary, "steps": 90, "epochs": 90 / 468, "val_acc": 0.5}))
    assert "90 steps = 0.19 epochs" in text
    assert "validation accuracy" in text and "50.00%" in text
    onnx_report = {"path": "a.onnx", "opset": 18, "bytes": 1000, "input_shape": ["batch", 1, 28, 28], "num_classes": 10,
                   "parity": {"max_abs_diff": 0.0, "tolerance": 1e-4, "top1_agreement": 1.0, "samples": 8},
                   "before": {"params": 10, "flops": 10}, "after": {"params": 10, "flops": 10}, "dead_units_removed": 0}
    assert "input [batch, 1, 28, 28] float32 -> logits [batch, 10]" in _render(tables.onnx_table(onnx_report))
    from popcli.data.base import DatasetInfo
    from popcli.cli.progress import SearchDisplay

    console = Console(record=True, width=200)
    display = SearchDisplay(console)
    display.handle("epoch", {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_acc": 1.0, "test_acc": 0.25,
                             "epoch_time_s": 1.0})
    display._on_start({"data": DatasetInfo("mnist", (1, 28, 28), 10, 54000, 6000, 10000, "/d"), "device": "cpu",
                       "total_steps": 5, "step": 0})
    display.progress.stop()
    shown = console.export_text()
    assert "val acc 100.00%" in shown and "6,000 validation" in shown and "from /d" in shown


def test_packaging_does_not_cap_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        if re.match(r"torch(vision)?\b", dep):
            assert "<" not in dep and "==" not in dep, dep
    assert "torch==" in (ROOT / "constraints.txt").read_text() and "constraints.txt" in (ROOT / "Makefile").read_text()


def test_readme_and_quickstart_agree_on_times():
    readme = (ROOT / "README.md").read_text()
    quickstart = (ROOT / "popcli" / "recipe" / "packaged" / "quickstart.yaml").read_text()
    assert "1.5 minutes" not in quickstart
    make_test = set(re.findall(r"make test[^\n]*?~(\d+) min", readme))
    assert len(make_test) <= 1, make_test


# --------------------------------------------------------------------------- recipes, runs


def test_packaged_recipes_by_name_and_show(tmp_path):
    listed = run("recipes")
    assert listed.exit_code == 0
    lines = {line.split()[0]: line for line in listed.stdout.strip().splitlines()}
    assert {"cifar10-conv4", "quickstart", "imagenet-resnet50", "fashion-mnist-paper-sweep"} <= set(lines)
    assert "Conv4 on CIFAR-10" in lines["cifar10-conv4"]
    shown = run("search", "cifar10-conv4", "--show-recipe", "--set", "search.density=0.3")
    assert shown.exit_code == 0 and not (tmp_path / "runs").exists()
    assert "search.density: 0.3" in shown.stdout and "in (0, 1]; default 0.5 (changed)" in shown.stdout
    assert 'data.dataset: "cifar10"' in shown.stdout and "model.arch: \"conv4\"" in shown.stdout
    keys = strict(run("recipe", "show", "cifar10-conv4", "--json").stdout)
    from popcli import recipe as recipes

    assert len(keys) == 1 + sum(len(vars(getattr(recipes.Recipe(), s))) for s in ("model", "data", "search"))
    by_key = {k["key"]: k for k in keys}
    assert by_key["search.optimizer"]["choices"] == ["sgd", "adam"] and by_key["search.lr"]["range"] == [0.0, 100.0]
    assert by_key["data.dataset"]["value"] == "cifar10" and by_key["data.dataset"]["default"] == "fashion-mnist"
    one_line_error(run("search", "cifar10-conv5"), 2, "popcli recipes")


def test_runs_index(tmp_path, finished_run):
    index = tmp_path / "index.csv"
    result = run("runs", finished_run.parent, "--csv", index, "--json")
    assert result.exit_code == 0, result.stderr
    rows = strict(result.stdout)
    summary = strict((finished_run / "summary.json").read_text())
    assert [(r["run"], r["test_acc"], r["steps"]) for r in rows] == [("run", summary["test_acc"], summary["steps"])]
    assert index.read_text().splitlines()[0].startswith("run,seed,model.arch,model.init")  # results.csv's schema
    assert "finished runs" in run("runs", finished_run.parent).stdout
    one_line_error(run("runs", tmp_path / "nope"), 1, "not found")


def test_help_has_examples_and_completion():
    assert "--install-completion" in run("--help").stdout
    for command in ("search", "export", "inspect", "eval", "models", "sweep", "plot", "recipes", "runs"):
        shown = run(command, "--help")
        assert shown.exit_code == 0 and f"popcli {command}" in shown.stdout.split("Example", 1)[-1], command


def test_top5_reported_when_more_than_5_classes(tmp_path):
    result = run("search", *SYNTH, "--set", "data.num_classes=8", "--set", "search.max_steps=2", "--out", tmp_path / "r",
                 "--json")
    assert result.exit_code == 0, result.stderr
    summary = strict(result.stdout)
    assert summary["test_acc"] <= summary["test_top5"] <= 1.0
    record = strict((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["test_top5"] == summary["test_top5"]
    assert strict(run("search", *SYNTH, "--set", "search.max_steps=1", "--out", tmp_path / "s", "--json").stdout)[
        "test_top5"] is None  # 4 classes: top-5 would be 100%, so it is not reported


def test_top5_counts_label_among_the_five_best():
    import torch

    from popcli.engine.loop import evaluate

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x

    class Loader:
        def batches(self):
            logits = torch.tensor([[9., 8, 7, 6, 5, 4, 3], [0., 1, 2, 3, 4, 5, 6], [1., 0, 0, 0, 0, 0, 0]])
            yield logits, torch.tensor([4, 0, 0])  # rank 5 (hit), rank 7 (miss), rank 1 (hit, also top-1)

    result = evaluate(Fixed(), Loader())
    assert result["top5"] == 2 / 3 and result["acc"] == 1 / 3


def test_tensorboard_logging(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run("search", *SYNTH, "--set", "search.max_steps=4", "--set", "search.log=tensorboard",
                 "--set", "search.log_every=2", "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 0, result.stderr
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert [e.step for e in events.Scalars("train/lr")] == [2, 4]
    summary = strict((tmp_path / "r" / "summary.json").read_text())
    assert events.Scalars("test/acc")[-1].value == pytest.approx(summary["test_acc"], abs=1e-6)  # float32 in the file
    assert not (tmp_path / "plain" / "tensorboard").exists()
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)
    one_line_error(run("search", *SYNTH, "--set", "search.log=tensorboard", "--out", tmp_path / "s"), 2,
                   "popcli[tensorboard]")
