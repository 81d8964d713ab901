"""SupSup's one-shot task inference over a multi-mask file (popcli.load(path, mask="auto",
inputs=x), popcli eval --mask auto): the entropy gradient is the true one, each task is found
from a batch of its own images, and the model handed back is exactly that mask's."""

import json

import pytest
import torch
from typer.testing import CliRunner

import popcli
from popcli import recipe as recipes
from popcli.artifact import read
from popcli.artifact.rebuild import mask_models
from popcli.artifact.tasks import TaskMixture
from popcli.cli import get_app
from popcli.data import load_data
from popcli.engine.loop import search
from popcli.errors import ArtifactError
from popcli.export import export

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TASK = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=512",
        "data.test_size=256", "data.batch_size=32", "model.arch=fc", "model.hidden=[64]", "model.batchnorm=false",
        "search.epochs=3", "search.density=0.3", "search.lr=0.1", "search.threads=1"]


def _recipe(task, *extra):
    return recipes.load(None, [*TASK, f"data.permute_task={task}", *extra])


@pytest.fixture(scope="module")
def three_tasks(tmp_path_factory):
    """One multi-mask file: three permuted synthetic tasks over one seed (and the test images of each)."""
    out = tmp_path_factory.mktemp("tasks")
    specs, images = [], {}
    for task in range(3):
        recipe = _recipe(task)
        search(recipe, out / f"t{task}")
        specs.append(f"t{task}={out / f't{task}'}")
        test = load_data(recipe.data, recipe.seed).test
        images[f"t{task}"] = (torch.cat([x for x, _ in test.batches()]), torch.cat([y for _, y in test.batches()]))
    export(None, out / "three.safetensors", masks=specs)
    return out / "three.safetensors", images


def test_entropy_gradient_is_the_derivative_of_the_mixed_models_entropy(three_tasks):
    """dH/dalpha_i from autograd against central differences of H(alpha) (float32, eps 1e-2)."""
    path, images = three_tasks
    art = read(path)
    mixture = TaskMixture(mask_models(art))
    x = images["t1"][0][:16]
    guess = mixture.infer(x)
    alpha = torch.full((3,), 1 / 3)
    for i, name in enumerate(mixture.names):
        step = torch.zeros(3)
        step[i] = 1e-2
        with torch.no_grad():
            numeric = (mixture.entropy(x, alpha + step) - mixture.entropy(x, alpha - step)) / 2e-2
        assert guess.gradients[name] == pytest.approx(float(numeric), rel=2e-2, abs=1e-4), name
    # at alpha = e_i the mixed model is mask i's own model: the same logits
    one = torch.tensor([0.0, 1.0, 0.0])
    with torch.no_grad():
        h = mixture.entropy(x, one)
        p = torch.softmax(popcli.load(path, mask="t1")(x), 1)
    assert float(h) == pytest.approx(float(-(p * p.log()).sum(1).mean()), rel=1e-5)


def test_load_auto_finds_the_task_of_a_batch_and_returns_that_mask(three_tasks):
    path, images = three_tasks
    for name, (x, _) in images.items():
        model = popcli.load(path, mask="auto", inputs=x[:64])
        assert model.popcli_task["mask"] == name
        grads = model.popcli_task["entropy_gradient"]
        assert min(grads, key=grads.get) == name and set(grads) == {"t0", "t1", "t2"}
        with torch.no_grad():
            assert torch.equal(model(x), popcli.load(path, mask=name)(x))  # exactly that mask's model


def test_load_auto_errors_are_one_line(three_tasks, tmp_path):
    path, images = three_tasks
    x = images["t0"][0][:8]
    for kwargs, fragment in (({}, "pass inputs="), ({"inputs": x[:, :, :4]}, "the model takes"),
                             ({"inputs": x.numpy()}, "got ndarray")):
        with pytest.raises(ArtifactError, match=fragment) as err:
            popcli.load(path, mask="auto", **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ArtifactError, match="inputs= is for mask='auto'"):
        popcli.load(path, mask="t0", inputs=x)
    single = tmp_path / "one.safetensors"
    export(path.parent / "t2", single)
    assert popcli.load(single, mask="auto", inputs=x).popcli_task["mask"] == "default"  # one mask: that one


def test_eval_mask_auto_reports_task_id_accuracy_per_batch_size(three_tasks):
    path, _ = three_tasks
    result = CliRunner().invoke(get_app(), ["eval", str(path), "--mask", "auto", "--batch-sizes", "1,64",
                                            "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    tasks = report["task_inference"]
    assert tasks["masks"] == ["t0", "t1", "t2"] and tasks["batch_sizes"] == [1, 64]
    assert len(tasks["rows"]) == 6 and all(r["images"] == 256 for r in tasks["rows"])
    assert tasks["task_id_acc"]["64"] == 1.0  # 4 batches of 64 per task, every one found
    assert 1 / 3 < tasks["task_id_acc"]["1"] <= 1.0  # one image: better than chance
    by_size = {r["batch_size"]: r for r in tasks["rows"] if r["mask"] == "t0"}
    assert by_size[64]["acc_inferred"] == by_size[64]["acc_given"]  # every batch found: the same predictions
    top1 = {row["engine"]: row["top1"] for row in report["accuracy"]}
    assert top1["task_inferred_b64"] == top1["task_given"]
    assert [r["batch_size"] for r in report["latency"]] == [1, 64]
    table = CliRunner().invoke(get_app(), ["eval", str(path), "--mask", "auto", "--batch-sizes", "64", "--limit", "64"])
    assert table.exit_code == 0 and "task inference" in table.stdout, table.output


def test_batch_norm_statistics_of_each_mask_are_mixed_too(tmp_path):
    """Masks with their own batch-norm statistics: inference runs (statistics mixed, the gradient
    the masks') and still finds the task of a large batch."""
    specs, xs = [], {}
    for task in range(2):
        recipe = _recipe(task, "model.batchnorm=true", "search.epochs=2")
        search(recipe, tmp_path / f"b{task}")
        specs.append(f"b{task}={tmp_path / f'b{task}'}")
        xs[f"b{task}"] = next(iter(load_data(recipe.data, recipe.seed).test.batches()))[0][:64]
    export(None, tmp_path / "bn.safetensors", masks=specs)
    for name, x in xs.items():
        assert popcli.load(tmp_path / "bn.safetensors", mask="auto", inputs=x).popcli_task["mask"] == name
