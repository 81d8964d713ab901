"""popcli.search(model, train_data, test_data, arch=...): the user's subnetified model and own
Dataset / DataLoader through the search loop, export, load; exact resume for a Dataset."""

import inspect

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import popcli
from popcli.errors import DataError, ModelError, SearchInterrupted
from popcli.export import export


def build(*, in_channels, image_size, num_classes):
    """A plain torch model (this test module is importable, so 'test_user_search:build' is its arch)."""
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes))


def build_wider(*, in_channels, image_size, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, num_classes))


ARCH = f"{__name__}:build"


def data(n=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=gen)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])


def fresh_model(density=0.5):
    return popcli.subnetify(build(in_channels=3, image_size=8, num_classes=2), density)


SETTINGS = dict(batch_size=16, epochs=2, lr=0.05, threads=1)


def test_user_dataset_search_export_load_exact(tmp_path):
    train, test = data()
    model = fresh_model()
    summary = popcli.search(model, train, test, arch=ARCH, run_dir=tmp_path / "run", **SETTINGS)
    assert summary["steps"] == 8 and summary["weights_verified"] and summary["dataset"] == "user"
    assert summary["recipe"]["model"]["arch"] == ARCH and summary["recipe"]["search"]["density"] == 0.5
    export(tmp_path / "run", tmp_path / "m.safetensors")
    exact = {"fold_bn": False} if "fold_bn" in inspect.signature(popcli.load).parameters else {}  # no BN folding
    loaded = popcli.load(tmp_path / "m.safetensors", **exact)
    x = test.tensors[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))  # the searched model itself, bit for bit
    assert summary["test_acc"] == pytest.approx(float((loaded(x).argmax(1) == test.tensors[1]).float().mean()))
    with pytest.raises(DataError, match="your own Dataset"):  # ONNX parity needs images: export(..., inputs=x)
        export(tmp_path / "m.safetensors", onnx=tmp_path / "m.onnx")


def test_resume_is_exact_for_a_user_dataset(tmp_path):
    train, test = data()
    whole = fresh_model()
    popcli.search(whole, train, test, arch=ARCH, run_dir=tmp_path / "whole", **SETTINGS)
    calls = []
    broken = fresh_model()
    with pytest.raises(SearchInterrupted):
        popcli.search(broken, train, test, arch=ARCH, run_dir=tmp_path / "part", should_stop=lambda: calls.append(1)
                      or len(calls) == 5, **SETTINGS)  # stops mid-epoch 2
    resumed = fresh_model()
    popcli.search(resumed, train, test, arch=ARCH, run_dir=tmp_path / "part", resume=True, **SETTINGS)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_user_dataloader_is_taken_as_it_is(tmp_path):
    train, test = data()
    summary = popcli.search(fresh_model(), DataLoader(train, batch_size=32), DataLoader(test, batch_size=10), arch=ARCH,
                            run_dir=tmp_path / "run", epochs=3, threads=1)
    assert summary["steps"] == 6 and summary["recipe"]["data"]["batch_size"] == 32


class DictItems(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"image": torch.zeros(3, 8, 8), "label": 0}


@pytest.mark.parametrize("case,error,fragment", [
    ("no arch", ModelError, "needs arch="),
    ("wrong arch", ModelError, "builds a different model"),
    ("not subnetified", ModelError, "no subnet layers"),
    ("two densities", ModelError, "different densities"),
    ("dict items", DataError, r"\(images, labels\) pairs"),
    ("no test data", ModelError, "train and a test"),
])
def test_bad_user_inputs_are_one_line_errors(tmp_path, case, error, fragment):
    train, test = data()
    model, kwargs = fresh_model(), dict(arch=ARCH, run_dir=tmp_path / "run", **SETTINGS)
    if case == "no arch":
        kwargs.pop("arch")
    elif case == "wrong arch":
        kwargs["arch"] = f"{__name__}:build_wider"
    elif case == "not subnetified":
        model = build(in_channels=3, image_size=8, num_classes=2)
    elif case == "two densities":
        model[5].density = 0.3
    elif case == "dict items":
        train = test = DictItems()
    with pytest.raises(error, match=fragment) as err:
        popcli.search(model, train, None if case == "no test data" else test, **kwargs)
    assert "\n" not in str(err.value)


def test_recipe_path_of_popcli_search(tmp_path):
    overrides = ["data.dataset=synthetic", "data.shape=[1,4,4]", "data.num_classes=2", "data.train_size=32",
                 "data.test_size=16", "data.batch_size=16", "model.hidden=[8]", "search.epochs=1", "search.threads=1"]
    summary = popcli.search(None, run_dir=tmp_path / "run", overrides=overrides)
    assert summary["steps"] == 2 and summary["arch"] == "fc"
    with pytest.raises(ModelError, match="reads its data from the recipe"):
        popcli.search(None, *data(), run_dir=tmp_path / "other")


def test_a_model_that_describes_itself_needs_no_arch(tmp_path):
    from popcli.recipe import from_dict

    train, test = data()
    model = fresh_model()
    model.popcli_description = {"recipe": from_dict({"seed": 3, "model": {"arch": ARCH, "init": "kaiming_normal"}})}
    summary = popcli.search(model, train, test, run_dir=tmp_path / "run", **{**SETTINGS, "epochs": 1})
    assert (summary["recipe"]["model"]["arch"], summary["seed"], summary["init"]) == (ARCH, 3, "kaiming_normal")
