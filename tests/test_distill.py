"""Distillation from a teacher during a search (``search.distill_teacher``, ``engine.distill``):
the loss as written, w=0 as plain cross-entropy bit for bit, exact resume, a real Fashion-MNIST
search, artifact teachers, and the one-line refusals."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

import popcli
from popcli import recipe as recipes
from popcli.engine.distill import distill_loss, file_sha256
from popcli.engine.loop import search
from popcli.errors import DataError, RecipeError, RunError, SearchInterrupted, UntrustedCodeError
from popcli.storage.checkpoint import load_checkpoint, save_checkpoint

SYNTH = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=256",
         "data.test_size=128", "data.batch_size=32", "model.arch=fc", "model.hidden=[32]", "search.lr=0.05",
         "search.threads=1", "search.device=cpu"]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def make(*extra):
    return recipes.load(None, [*SYNTH, *extra])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A dense teacher run folder on the synthetic task."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    search(make("search.method=dense", "search.epochs=2"), run)
    return run


def _state(run):
    return load_checkpoint(run / "last.pt")


def _same_model(a, b):
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_loss_is_the_hand_computation():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen) * 3
    y = torch.tensor([0, 3, 1, 2, 2])
    t, w = 2.5, 0.3
    ce = -sum(math.log(math.exp(student[i, y[i]]) / sum(math.exp(v) for v in student[i])) for i in range(5)) / 5
    kl = 0.0
    for i in range(5):
        p = [math.exp(v / t) for v in teacher[i].tolist()]
        q = [math.exp(v / t) for v in student[i].tolist()]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) / 5
    expected = (1 - w) * ce + w * t * t * kl
    assert float(distill_loss(student, teacher, y, t, w)) == pytest.approx(expected, rel=1e-5)
    assert float(distill_loss(student, teacher, y, t, 0.0)) == pytest.approx(ce, rel=1e-6)
    assert float(distill_loss(teacher, teacher, y, t, 1.0)) == pytest.approx(0.0, abs=1e-6)  # KL(p || p) = 0


def test_weight_zero_is_plain_cross_entropy_exactly(tmp_path, teacher):
    plain = search(make("search.epochs=2"), tmp_path / "plain")
    zero = search(make("search.epochs=2", f"search.distill_teacher={teacher}", "search.distill_weight=0"),
                  tmp_path / "zero")
    _same_model(_state(tmp_path / "plain"), _state(tmp_path / "zero"))
    assert (tmp_path / "plain" / "metrics.jsonl").read_text().count("train_loss") == 2
    strip = lambda d: [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"}  # noqa: E731
                       for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "plain") == strip(tmp_path / "zero")
    assert zero["test_acc"] == plain["test_acc"] and "distill_teacher" not in plain
    assert zero["distill_teacher_sha256"] == file_sha256(teacher / "last.pt")
    assert _state(tmp_path / "zero")["distill"]["sha256"] == zero["distill_teacher_sha256"]


def test_distillation_changes_the_search_and_pulls_toward_the_teacher(tmp_path, teacher):
    search(make("search.epochs=2"), tmp_path / "plain")
    summary = search(make("search.epochs=2", f"search.distill_teacher={teacher}", "search.distill_weight=0.7",
                          "search.distill_temperature=2"), tmp_path / "distilled")
    assert summary["test_acc"] > 0.5 and summary["distill_teacher"] == str(teacher)
    a, b = _state(tmp_path / "plain")["model"], _state(tmp_path / "distilled")["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("scores"))


@pytest.mark.parametrize("stop_at", [5, 8])  # mid-epoch and at an epoch boundary
def test_resume_gives_the_uninterrupted_run(tmp_path, teacher, stop_at):
    recipe = make("search.epochs=2", f"search.distill_teacher={teacher}", "search.distill_temperature=3")
    search(recipe, tmp_path / "straight")
    steps = []
    on_event = lambda kind, info: steps.append(info["step"]) if kind == "step" else None  # noqa: E731
    with pytest.raises(SearchInterrupted):
        search(recipe, tmp_path / "resumed", on_event=on_event, should_stop=lambda: len(steps) >= stop_at)
    search(recipe, tmp_path / "resumed", resume=True)
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "resumed")
    assert a["progress"] == b["progress"] and a["distill"] == b["distill"]
    _same_model(a, b)
    assert a["metrics_lines"][-1].split('"epoch_time_s"')[0] == b["metrics_lines"][-1].split('"epoch_time_s"')[0]


def test_resume_refuses_a_changed_teacher(tmp_path):
    teacher = tmp_path / "teacher"
    search(make("search.method=dense", "search.epochs=1"), teacher)
    recipe = make("search.epochs=2", f"search.distill_teacher={teacher}")
    with pytest.raises(SearchInterrupted):
        search(recipe, tmp_path / "run", should_stop=lambda: True)
    search(make("search.method=dense", "search.epochs=1", "seed=1"), teacher, force=True)  # another teacher
    with pytest.raises(RunError, match="changed since this run started") as err:
        search(recipe, tmp_path / "run", resume=True)
    assert "\n" not in str(err.value)


def test_a_relative_teacher_is_recorded_absolute(tmp_path, teacher, monkeypatch):
    monkeypatch.chdir(teacher.parent)
    summary = search(make("search.max_steps=2", f"search.distill_teacher={teacher.name}"), tmp_path / "run")
    assert summary["distill_teacher"] == str(teacher)
    assert recipes.load(tmp_path / "run" / "recipe.yaml").search.distill_teacher == str(teacher)


def test_an_artifact_teacher(tmp_path, teacher):
    from popcli.export import export

    export(teacher, tmp_path / "teacher.safetensors", codec="auto")
    art = tmp_path / "teacher.safetensors"
    summary = popcli.search(make("search.max_steps=6", f"search.distill_teacher={art}"), run_dir=tmp_path / "run")
    assert summary["distill_teacher_sha256"] == file_sha256(art)
    with pytest.raises(RecipeError, match="load_artifact=popcli.load"):  # the engine never imports artifact
        search(make("search.max_steps=2", f"search.distill_teacher={art}"), tmp_path / "direct")


@pytest.mark.parametrize("setting, match", [
    ("search.distill_temperature=0", r"search.distill_temperature: 0.0 is out of range \[0.05, 100"),
    ("search.distill_temperature=101", "out of range"),
    ("search.distill_weight=1.5", r"search.distill_weight: 1.5 is out of range \[0.0, 1.0\]"),
    ("search.distill_weight=-0.1", "out of range"),
    ("search.distill_teacher=''", "empty path"),
])
def test_bad_values_are_one_line(setting, match):
    with pytest.raises(RecipeError, match=match):
        make(setting)


def test_teacher_refusals_are_one_line(tmp_path, teacher):
    cases = []
    with pytest.raises(RecipeError, match="not found") as err:
        search(make("search.max_steps=2", f"search.distill_teacher={tmp_path / 'nope'}"), tmp_path / "a")
    cases.append(err)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="has no last.pt") as err:
        search(make("search.max_steps=2", f"search.distill_teacher={tmp_path / 'empty'}"), tmp_path / "b")
    cases.append(err)
    with pytest.raises(RecipeError, match="outputs \\[4\\] logits per image but this search has 3 classes") as err:
        search(make("search.max_steps=2", "data.num_classes=3", f"search.distill_teacher={teacher}"), tmp_path / "c")
    cases.append(err)
    with pytest.raises(RecipeError, match=r"takes inputs \[1, 8, 8\]") as err:
        search(make("search.max_steps=2", "data.shape=[1,6,6]", f"search.distill_teacher={teacher}"), tmp_path / "d")
    cases.append(err)
    with pytest.raises(RecipeError, match="permute_task=None but this search reads permute_task=1") as err:
        search(make("search.max_steps=2", "data.permute_task=1", f"search.distill_teacher={teacher}"), tmp_path / "e")
    cases.append(err)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="unreadable") as err:
        search(make("search.max_steps=2", f"search.distill_teacher={tmp_path / 'junk.pt'}"), tmp_path / "f")
    cases.append(err)
    for err in cases:
        assert "\n" not in str(err.value)
    assert not (tmp_path / "a").exists() or not (tmp_path / "a" / "last.pt").exists()


def test_a_teacher_of_another_dataset_is_refused(tmp_path, teacher):
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    recipe = recipes.load(None, ["search.max_steps=2", "search.threads=1", f"search.distill_teacher={teacher}"])
    with pytest.raises(RecipeError, match="was trained on synthetic but this search reads fashion-mnist"):
        search(recipe, tmp_path / "run")


def test_a_teacher_naming_foreign_code_is_not_built(tmp_path, teacher):
    state = load_checkpoint(teacher / "last.pt")
    state.pop("format")
    state["recipe"]["model"]["arch"] = "os.path:join"  # an import path: code a file may not run
    save_checkpoint(tmp_path / "foreign.pt", state)
    with pytest.raises(UntrustedCodeError, match="os.path:join"):
        search(make("search.max_steps=2", f"search.distill_teacher={tmp_path / 'foreign.pt'}"), tmp_path / "run")


def test_a_loader_without_sample_indices_is_refused():
    from popcli.data import Loader

    class Stream(Loader):
        batch_size, num_samples, train = 4, 8, True

        def batches(self, epoch=0, start_step=0):
            yield from ()

    with pytest.raises(DataError, match="in-memory dataset"):
        next(iter(Stream().indexed_batches()))


def test_cli_search_with_a_teacher(tmp_path, teacher):
    from typer.testing import CliRunner

    from popcli.cli import get_app

    args = ["search", *[x for s in SYNTH for x in ("--set", s)], "--set", "search.max_steps=3", "--set",
            f"search.distill_teacher={teacher}", "--out", str(tmp_path / "run"), "--json", "-q"]
    result = CliRunner().invoke(get_app(), args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["distill_teacher_sha256"] == file_sha256(teacher / "last.pt")
    result = CliRunner().invoke(get_app(), [*args[:-4], "--set", "search.distill_weight=2", "--out",
                                            str(tmp_path / "bad")])
    assert result.exit_code == 2 and "search.distill_weight" in result.output


@pytest.mark.slow
def test_short_distilled_search_on_real_fashion_mnist(tmp_path):
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST is missing on CI; install it with `apt-get install dataset-fashion-mnist`")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    lenet = ["model.arch=fc", "model.hidden=[300,100]", "model.batchnorm=false", "search.threads=1",
             "search.epochs=1", "search.device=cpu"]
    search(recipes.load(None, [*lenet, "search.method=dense", "search.max_steps=150"]), tmp_path / "teacher")
    summary = search(recipes.load(None, [*lenet, "search.density=0.1", "search.max_steps=150",
                                         f"search.distill_teacher={tmp_path / 'teacher'}", "search.distill_weight=0.3",
                                         "search.distill_temperature=2"]), tmp_path / "student")
    # 10 classes: chance is 0.1; measured 0.63 here after 150 steps at 10% kept
    assert summary["dataset"] == "fashion-mnist" and summary["steps"] == 150 and summary["weights_verified"]
    assert summary["test_acc"] > 0.55 and summary["distill_teacher_sha256"] == file_sha256(tmp_path / "teacher" / "last.pt")
