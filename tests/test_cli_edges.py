"""The CLI's edges (issue 20, section 3), one test per defect: export's output names, eval on your
own data, stored data folders, JSON ids, the runs table, one CSV schema, did-you-mean, YAML
errors, recipe bases, completion, model names. Commands run in-process (typer's CliRunner)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import popcli
from popcli import recipe as recipes
from popcli.cli import app as cli_app
from popcli.deploy import graph
from popcli.deploy.evaluate import ENGINES

from cli_helpers import one_line_error, run

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SYNTH = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=128",
         "data.test_size=64", "data.batch_size=32", "model.arch=fc", "model.hidden=[16]", "search.lr=0.05",
         "search.threads=1", "search.device=cpu"]


def sets(*overrides: str) -> list[str]:
    return [a for o in [*SYNTH, *overrides] for a in ("--set", o)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished synthetic run (folder ``run``) and its artifact ``a.safetensors``."""
    root = tmp_path_factory.mktemp("edges")
    result = run("search", *sets("search.max_steps=8", "search.epochs=2"), "--out", root / "run", "-q")
    assert result.exit_code == 0, result.stderr
    assert run("export", root / "run", "-o", root / "a.safetensors").exit_code == 0
    return root


# --------------------------------------------------------------------------- export names


def test_export_output_suffixes(tmp_path, finished):
    result = run("export", finished / "run", "-o", tmp_path / "x.onnx", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["onnx"]["path"] == str(tmp_path / "x.onnx")  # -o x.onnx: the suffix decides
    assert "popcli.recipe" in graph.metadata_of(tmp_path / "x.onnx") and not (tmp_path / "x.safetensors").exists()
    assert run("export", finished / "run", "-o", tmp_path / "plain").exit_code == 0
    assert popcli.load(tmp_path / "plain.safetensors") is not None  # no suffix: .safetensors added
    one_line_error(run("export", finished / "run", "-o", tmp_path / "x.pt"), 2, "name it")
    one_line_error(run("export", finished / "run", "-o", tmp_path / "y.onnx", "--onnx", tmp_path / "z.onnx"), 2,
                   "-o is the artifact")
    one_line_error(run("export", finished / "run", "--onnx", tmp_path / "w.safetensors"), 2, "w.onnx")
    (tmp_path / "folder").mkdir()
    one_line_error(run("export", finished / "run", "-o", tmp_path / "folder", "--force"), 2, "is a folder")


# --------------------------------------------------------------------------- eval on your own data


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """A model searched with popcli.search on the user's own Dataset, exported; with its test data."""
    root = tmp_path_factory.mktemp("own")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=gen)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, :, :4].mean((1, 2, 3)) > 0).long()
    train, test = torch.utils.data.TensorDataset(x[:64], y[:64]), torch.utils.data.TensorDataset(x[64:], y[64:])
    model = popcli.create_model("fc", density=0.5, num_classes=4, in_chans=1, image_size=8, hidden=[16])
    popcli.search(model, train, test, run_dir=root / "run", epochs=1, max_steps=4, threads=1, device="cpu")
    assert run("export", root / "run", "-o", root / "own.safetensors").exit_code == 0
    np.save(root / "x.npy", x[64:].numpy())
    np.save(root / "y.npy", y[64:].numpy())
    (root / "y.txt").write_text("\n".join(str(int(v)) for v in y[64:]) + "\n")
    return root, x[64:], y[64:]


def test_eval_of_a_model_searched_on_your_own_data(own_data):
    root, x, y = own_data
    one_line_error(run("eval", root / "own.safetensors"), 1, "--latency-only")  # no test set by name: says so
    latency = json.loads(run("eval", root / "own.safetensors", "--latency-only", "--batch-sizes", "1,3", "--json").stdout)
    assert latency["inputs"] == "generated" and latency["accuracy"] == [] and latency["input_shape"] == [1, 8, 8]
    assert {(row["engine"], row["batch_size"]) for row in latency["latency"]} >= {("ort_fp32", 3), ("torch_subnet", 1)}
    with torch.no_grad():
        expected = float((popcli.load(root / "own.safetensors")(x).argmax(1) == y).float().mean())
    for labels in ("y.npy", "y.txt"):
        result = run("eval", root / "own.safetensors", "--inputs", root / "x.npy", "--labels", root / labels,
                     "--batch-sizes", "2", "--int8", "--json")
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        top1 = {row["engine"]: row["top1"] for row in report["accuracy"]}
        assert report["inputs"] == "files" and report["test_images"] == len(y)
        assert top1["torch_subnet"] == pytest.approx(expected) and top1["ort_fp32"] == pytest.approx(expected)
        assert "ort_int8" in top1 and report["int8_calibration"] == "the --inputs images"
    one_line_error(run("eval", root / "own.safetensors", "--labels", root / "y.npy"), 2, "--labels go with --inputs")
    (root / "short.txt").write_text("0\n1\n")
    one_line_error(run("eval", root / "own.safetensors", "--inputs", root / "x.npy", "--labels", root / "short.txt"),
                   1, "2 labels for 32 inputs")


def test_export_onnx_int8_calibrates_on_given_inputs(own_data, tmp_path):
    from popcli.export import export

    root, x, _ = own_data
    report = export(root / "run", onnx=tmp_path / "o.onnx", int8=True, inputs=x)
    q = report["onnx"]["int8"]
    assert q["int8_acc"] is None and 0.0 <= q["top1_agreement"] <= 1.0 and (tmp_path / "o.int8.onnx").is_file()


def test_a_model_saved_without_a_dataset_is_not_evaluated_on_stand_in_data(tmp_path, finished):
    model = popcli.create_model("fc", density=0.5, num_classes=4, in_chans=1, image_size=8, hidden=[8])
    popcli.save(model, tmp_path / "made.safetensors")
    one_line_error(run("eval", tmp_path / "made.safetensors"), 1, "saved without a dataset")
    assert run("export", tmp_path / "made.safetensors", "--onnx", tmp_path / "made.onnx").exit_code == 0
    one_line_error(run("export", tmp_path / "made.safetensors", "--onnx", tmp_path / "q.onnx", "--int8"), 2,
                   "saved without one")
    one_line_error(run("eval", tmp_path / "made.onnx"), 1, "saved without a dataset")
    result = run("eval", finished / "a.safetensors", "--batch-sizes", "1", "--json")  # searched on synthetic: fine
    assert result.exit_code == 0 and json.loads(result.stdout)["dataset"] == "synthetic"


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_relative_data_dir_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fm").symlink_to(FMNIST)
    result = run("search", "--data-dir", "fm", "--set", "search.max_steps=2", "--set", "model.hidden=[8]",
                 "--set", "model.batchnorm=false", "--set", "search.threads=1", "--out", "run", "-q")
    assert result.exit_code == 0, result.stderr
    stored = yaml.safe_load(Path("run/recipe.yaml").read_text())["data"]["data_dir"]
    assert stored == str(tmp_path / "fm")
    assert run("export", "run", "-o", "a.safetensors").exit_code == 0
    assert popcli.artifact.read("a.safetensors").recipe.data.data_dir == str(tmp_path / "fm")


# --------------------------------------------------------------------------- JSON, runs, one schema


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("swept") / "sweep"
    result = run("sweep", *sets("search.epochs=1"), "--grid", "search.density=0.3,0.7", "--out", out, "--json",
                 "--no-plot", "-q")
    assert result.exit_code == 0, result.stderr
    return out, json.loads(result.stdout)


def keys_of(value) -> set[str]:
    """Every key of every object in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    return {k for v in value for k in keys_of(v)} if isinstance(value, list) else set()


def test_json_keys_are_ids_and_sweep_json_carries_each_points_metrics(swept, finished):
    out, report = swept
    evaluated = json.loads(run("eval", finished / "a.safetensors", "--batch-sizes", "1", "--json").stdout)
    inspected = json.loads(run("inspect", finished / "a.safetensors", "--json").stdout)
    summary = json.loads((finished / "run" / "summary.json").read_text())
    for value in (report, evaluated, inspected, summary):
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", key) for key in keys_of(value)), keys_of(value)
    points = report["point_results"]
    assert [p["point"] for p in points] == [["search.density=0.3"], ["search.density=0.7"]]
    for point in points:
        summary = json.loads((Path(point["run_dir"]) / "summary.json").read_text())
        assert point["status"] == "done" and point["metrics"]["test_acc"] == summary["test_acc"]
        assert (summary["device"], summary["threads"], summary["amp"]) == ("cpu", 1, None)  # one fact per key
    again = run("sweep", *sets("search.epochs=1"), "--grid", "search.density=0.3,0.7", "--out", out, "--json", "-q",
                "--no-plot")
    assert [p["metrics"]["test_acc"] for p in json.loads(again.stdout)["point_results"]] == \
        [p["metrics"]["test_acc"] for p in points]  # skipped points report their metrics too


def test_eval_json_rows_carry_engine_device_threads(finished):
    report = json.loads(run("eval", finished / "a.safetensors", "--batch-sizes", "1", "--threads", "1",
                            "--json").stdout)
    for row in report["accuracy"] + report["latency"]:
        assert row["engine"] in ENGINES and row["device"] == "cpu" and row["threads"] == 1 and row["runtime"]
        assert row["label"] == ENGINES[row["engine"]]


def test_runs_table_fits_80_columns(tmp_path, finished, monkeypatch):
    import shutil

    for name in ("short", "a-run-folder-with-a-name-far-longer-than-any-terminal-column-would-hold-d0.5-s0"):
        shutil.copytree(finished / "run", tmp_path / name)
    monkeypatch.setattr(cli_app.out_console, "width", 80)
    shown = run("runs", tmp_path).stdout.splitlines()
    assert max(map(len, shown)) <= 80, shown
    rows = [line for line in shown if line.startswith(("short", "a-run"))]
    assert len(rows) == 2 and all("%" in line and "fc" in line for line in rows), shown  # one line per run


def test_runs_with_a_run_folder_named_in_bytes_that_are_not_utf8(tmp_path, finished):
    import shutil

    shutil.copytree(finished / "run", tmp_path / os.fsdecode(b"run-\xff"))
    result = run("runs", tmp_path, "--csv", tmp_path / "index.csv", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["run"] == "run-\\xff" and "run-\\xff" in (tmp_path / "index.csv").read_text()


def test_runs_sweep_and_plot_share_one_csv_schema(swept, tmp_path):
    out, _ = swept
    assert run("runs", out / "runs", "--csv", tmp_path / "runs.csv").exit_code == 0
    header = lambda path: path.read_text().splitlines()[0]  # noqa: E731
    assert header(tmp_path / "runs.csv") == header(out / "results.csv")
    drawn = run("plot", tmp_path / "runs.csv", "-o", tmp_path / "fig")
    assert drawn.exit_code == 0 and (tmp_path / "fig" / "accuracy_vs_density.png").is_file(), drawn.stderr


# --------------------------------------------------------------------------- suggestions and recipes


def test_did_you_mean_for_keys_options_models_and_recipes():
    one_line_error(run("search", "--set", "search.densty=0.3", "--show-recipe"), 2, "did you mean 'search.density'")
    one_line_error(run("search", "--set", "density=0.3", "--show-recipe"), 2, "did you mean 'search.density'")
    wrong = run("search", "--densty", "0.3")
    assert wrong.exit_code == 2 and "Did you mean --set search.density=VALUE?" in wrong.stderr
    assert "Did you mean --json?" in run("inspect", "--jsno", "x").stderr
    assert "Did you mean --out?" in run("search", "--out-dir", "x").stderr
    one_line_error(run("search", "quickstrt"), 2, "did you mean 'quickstart'")
    with pytest.raises(popcli.PopcliError, match="did you mean 'tv_resnet50'"):
        popcli.models.get_model_builder("tv_resnet5")


def test_yaml_errors_name_line_and_key(tmp_path):
    (tmp_path / "flow.yaml").write_text("model:\n  arch: fc\n  hidden: [1,\n")
    one_line_error(run("recipe", "show", tmp_path / "flow.yaml"), 2, "line 4 column 1")
    (tmp_path / "tab.yaml").write_text("model:\n  arch: fc\n\tx: 1\n")
    one_line_error(run("recipe", "show", tmp_path / "tab.yaml"), 2, "line 3 column 1")
    (tmp_path / "dup.yaml").write_text("search:\n  lr: 0.1\n  lr: 0.2\n")
    one_line_error(run("recipe", "show", tmp_path / "dup.yaml"), 2, "line 3")


def test_a_partial_recipe_starts_from_the_quick_start_or_its_base(tmp_path):
    (tmp_path / "part.yaml").write_text("search: {density: 0.3}\n")
    assert recipes.load(tmp_path / "part.yaml") == recipes.load(None, ["search.density=0.3"])  # as popcli search does
    (tmp_path / "own.yaml").write_text("base: defaults\nsearch: {density: 0.3}\n")
    assert recipes.load(tmp_path / "own.yaml").model.arch == "conv4"  # the schema's defaults, when asked
    (tmp_path / "child.yaml").write_text("base: part.yaml\nseed: 4\n")  # a base beside the file
    child = recipes.load(tmp_path / "child.yaml")
    assert (child.seed, child.search.density, child.model.arch) == (4, 0.3, "fc")
    shown = run("recipe", "show", tmp_path / "child.yaml").stdout.splitlines()[0]
    assert shown.startswith("# keys from: the packaged quickstart recipe <- ") and "child.yaml" in shown
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    one_line_error(run("recipe", "show", tmp_path / "loop.yaml"), 2, "a loop?")


def test_packaged_recipes_resolve_as_before_bases_existed():
    from popcli.recipe.catalog import packaged, packaged_text

    for name in packaged():
        data = yaml.safe_load(packaged_text(name))
        data.pop("base", None)
        assert recipes.load(name) == recipes.from_dict(data), name  # from_dict: the schema's defaults


def test_shell_completion_of_recipes_keys_and_models():
    from popcli.cli import complete

    assert "quickstart" in [name for name, _ in complete.recipes("quick")]
    assert "search.density=" in [name for name, _ in complete.key_values("search.den")]
    assert [name for name, _ in complete.key_values("model.arch=tv_res")][:1] == ["model.arch=tv_resnet101"]
    assert [name for name, _ in complete.key_values("search.method=sig")] == ["search.method=signed-supermask"]
    assert "tv_vit_tiny" in [name for name, _ in complete.models("tv_v")]
    env = {**os.environ, "_POPCLI_COMPLETE": "complete_bash", "COMP_WORDS": "popcli search --set search.dens",
           "COMP_CWORD": "3"}
    shown = subprocess.run([sys.executable, "-m", "popcli"], env=env, capture_output=True, text=True, timeout=120)
    assert "search.density=" in shown.stdout.split(), shown.stderr


def test_torchvision_models_are_tv_and_old_names_still_work():
    from popcli.engine.job import normalize
    from popcli.models import get_model_builder, model_aliases
    from popcli.models.registry import registered_builder

    tv = popcli.list_models("tv_*")
    assert tv and all(name.startswith("tv_") for name in tv)
    for name in popcli.list_models():  # every model built from torchvision's definitions carries the prefix
        if getattr(registered_builder(name), "popcli_policies", False):
            assert name.startswith("tv_"), name
    assert json.loads(run("models", "tv_*", "--json").stdout).keys() == set(tv)
    assert "old names" in run("models").stdout
    for old, new in model_aliases().items():
        assert get_model_builder(old) is get_model_builder(new)
        assert normalize(recipes.load(None, [f"model.arch={old}"])).model.arch == new  # a run records the new name


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_eval_on_an_image_folder_gives_the_datasets_accuracy_on_a_permuted_task(tmp_path):
    """PNG files of the first test images, in class folders: the artifact's preprocessing (mean, std,
    the task's pixel order) prepares them exactly as the loader did, so the accuracy is the same."""
    from PIL import Image

    from popcli.data.facts import FACTS
    from popcli.data.idx import read_idx

    result = run("search", "--data-dir", FMNIST, "--set", "data.permute_task=1", "--set", "model.hidden=[32]",
                 "--set", "model.batchnorm=false", "--set", "search.max_steps=30", "--set", "search.threads=1",
                 "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.stderr
    assert run("export", tmp_path / "run", "-o", tmp_path / "p.safetensors").exit_code == 0
    images = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz", 3)[:120].numpy()
    labels = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz", 1)[:120].numpy()
    for i, (image, label) in enumerate(zip(images, labels)):
        (tmp_path / "imgs" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "imgs" / str(label) / f"{i:03d}.png")
    report = lambda *args: json.loads(run("eval", tmp_path / "p.safetensors", "--batch-sizes", "1", "--json",  # noqa: E731
                                          *args).stdout)
    on_files, on_dataset = report("--inputs", tmp_path / "imgs"), report("--limit", "120")
    top1 = lambda r: {row["engine"]: row["top1"] for row in r["accuracy"]}  # noqa: E731
    assert on_files["test_images"] == on_dataset["test_images"] == 120
    assert top1(on_files) == top1(on_dataset) and top1(on_files)["torch_subnet"] > 0.3  # better than chance, same
    flat = tmp_path / "flat"  # the same images without folders, labelled by class name
    flat.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(flat / f"{i:03d}.png")
    names = FACTS["fashion-mnist"].class_names
    (tmp_path / "names.txt").write_text("".join(f"{names[v]}\n" for v in labels))
    assert top1(report("--inputs", flat, "--labels", tmp_path / "names.txt")) == top1(on_dataset)
