"""The library as torch users expect it: settings that survive search -> export -> load -> ONNX,
refusals that name the key, live-model attributes, one input-shape spelling, errors that speak
Python, and subnet layers under torch.jit.trace / torch.export."""

import json

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset, TensorDataset

import popcli
from popcli import artifact
from popcli.deploy import graph
from popcli.errors import ArtifactError, DataError, ModelError, OutputExists, PopcliError, RecipeError, RunExists
from popcli.export import export
from popcli.models import masked_layers

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def build_with_bias(*, in_channels, image_size, num_classes):
    """A plain torch model with biases (this module is importable: 'test_library_api:build_with_bias')."""
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, num_classes))


BIASED = f"{__name__}:build_with_bias"


def data(n=96, channels=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, 8, 8, generator=gen)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])


FAST = dict(batch_size=16, epochs=1, lr=0.05, threads=1)


# --------------------------------------------------------------------------- settings survive


@pytest.mark.slow  # an ONNX export with its parity check
def test_preprocessing_survives_search_export_load_and_onnx(tmp_path):
    model = popcli.create_model("conv2", density=0.5, num_classes=2, input_shape=(3, 8, 8), width=0.25,
                                mean=[0.5, 0.4, 0.3], std=[0.25, 0.2, 0.2], class_names=["neg", "pos"])
    expected = {"input_shape": [3, 8, 8], "num_classes": 2, "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.2],
                "pixel_scale": 255, "class_names": ["neg", "pos"]}
    assert {k: model.popcli_data_config[k] for k in expected} == expected  # a live model has it too
    train, test = data()
    popcli.search(model, train, test, run_dir=tmp_path / "run", **FAST)
    assert model.popcli_data_config == {**expected, "dataset": "user"}  # and after the search
    x = test.tensors[0]
    report = export(tmp_path / "run", tmp_path / "m.safetensors", onnx=tmp_path / "m.onnx", inputs=x)
    assert report["onnx"]["parity"]["top1_agreement"] == 1.0
    config = {**expected, "dataset": "user"}
    assert json.loads(artifact.read(tmp_path / "m.safetensors").metadata["preprocessing"]) == config
    loaded = popcli.load(tmp_path / "m.safetensors")
    assert loaded.popcli_data_config == config
    meta = graph.metadata_of(tmp_path / "m.onnx")
    assert json.loads(meta["popcli.preprocessing"]) == config
    assert json.loads(meta["popcli.mean"]) == config["mean"] and json.loads(meta["popcli.class_names"]) == ["neg", "pos"]
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    popcli.save(model, tmp_path / "again.safetensors")  # the searched model describes itself
    assert popcli.load(tmp_path / "again.safetensors").popcli_data_config == config


def test_subnetify_policies_survive_popcli_search_export_and_load(tmp_path):
    """biases="frozen" given to subnetify: the search's recipe keeps it (model.biases), the builder
    named by arch builds the biases too, the artifact regenerates them: the same logits."""
    train, test = data()
    model = popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2), 0.5, biases="frozen",
                             seed=2, mean=[0.1, 0.2, 0.3], std=[1.0, 1.0, 2.0])
    biases = {name: p.detach().clone() for name, p in model.named_parameters() if name.endswith(".bias")}
    assert len(biases) == 2 and not any(p.requires_grad for n, p in model.named_parameters() if n.endswith(".bias"))
    summary = popcli.search(model, train, test, arch=BIASED, run_dir=tmp_path / "run", **FAST)
    assert summary["recipe"]["model"]["biases"] == "frozen" and summary["seed"] == 2
    export(tmp_path / "run", tmp_path / "b.safetensors")
    art = artifact.read(tmp_path / "b.safetensors")
    assert sorted(r["name"] for r in art.header.frozen) == sorted(biases)  # regenerated, not stored
    loaded = popcli.load(tmp_path / "b.safetensors", mode="search")
    assert all(torch.equal(dict(loaded.named_parameters())[n], b) for n, b in biases.items())
    x = test.tensors[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert loaded.popcli_data_config["mean"] == [0.1, 0.2, 0.3] and loaded.popcli_data_config["std"] == [1.0, 1.0, 2.0]


def test_create_model_of_an_import_path_keeps_its_frozen_biases(tmp_path):
    model = popcli.create_model(BIASED, biases="frozen", input_shape=(3, 8, 8), num_classes=2, seed=4)
    names = [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    assert names == ["0.bias", "4.bias"] and sorted(model.popcli_report.frozen) == names
    assert all(float(p.abs().sum()) > 0 for n, p in model.named_parameters() if n in names)  # drawn, not zero
    popcli.save(model.eval(), tmp_path / "m.safetensors")
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(popcli.load(tmp_path / "m.safetensors")(x), model(x))


@pytest.mark.parametrize("case,fragment", [
    ("shape", "input_shape: the model was built for [1, 8, 8]"),
    ("classes", "num_classes: the model was built with num_classes=3"),
    ("class names", "class_names: the model was given"),
    ("method", "search.method='biprop', but the model was built with search.method='edge-popup'"),
    ("biases", "model.biases='drop', but the model was built with model.biases='frozen'"),
])
def test_a_real_mismatch_names_the_key(tmp_path, case, fragment):
    train, test = data()
    kwargs = dict(run_dir=tmp_path / "run", **FAST)
    if case == "shape":
        model = popcli.create_model("conv2", num_classes=2, input_shape=(1, 8, 8), width=0.25)
    elif case == "classes":
        model = popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2), input_shape=(3, 8, 8),
                                 num_classes=3)
        kwargs["arch"] = BIASED
    elif case == "class names":
        test.classes = ["a", "b"]
        model = popcli.create_model("conv2", num_classes=2, input_shape=(3, 8, 8), width=0.25, class_names=["b", "a"])
    elif case == "method":
        model, kwargs["method"] = popcli.create_model("conv2", num_classes=2, input_shape=(3, 8, 8), width=0.25), "biprop"
    else:
        model = popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2), biases="frozen")
        kwargs.update({"arch": BIASED, "model.biases": "drop"})
    with pytest.raises(ModelError) as err:
        popcli.search(model, train, test, **kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("kwargs,fragment", [
    ({"mean": [0.5, 0.5]}, "mean has 2 values but the input has 3 channel(s)"),
    ({"std": [1.0, 0.0, 1.0]}, "every value must be positive"),
    ({"class_names": ["a"]}, "class_names has 1 names but the model has num_classes=2"),
    ({"input_shape": (3, 8, 8), "in_chans": 1}, "disagrees with in_chans=1"),
    ({"input_shape": (8, 8)}, "expected (C, H, W)"),
])
def test_create_model_refuses_preprocessing_that_does_not_fit(kwargs, fragment):
    with pytest.raises(ModelError) as err:
        popcli.create_model("conv2", num_classes=2, **{"input_shape": (3, 8, 8), **kwargs})
    assert fragment in str(err.value)


# --------------------------------------------------------------------------- subnetify refusals


def test_subnetify_refuses_a_subnetified_module_and_unknown_keep_dense_names():
    model = popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2))
    with pytest.raises(ModelError, match="already subnetified .*first '0'"):
        popcli.subnetify(model, 0.3)
    with pytest.raises(ModelError, match=r"keep_dense names '5', which is not a layer of this model; its layers: 0, 4"):
        popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2), keep_dense=["5"])
    with pytest.raises(ModelError, match="did you mean 'features.conv'"):
        popcli.subnetify(_named(), keep_dense="features.conf")
    with pytest.raises(ModelError, match="keep_dense names '3', a Flatten"):
        popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2), keep_dense={"3"})
    kept = popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2), keep_dense=["4"])
    assert [n for n, _ in masked_layers(kept)] == ["0"] and kept.popcli_report.dense == ["4"]


def _named():
    model = nn.Module()
    model.features = nn.Module()
    model.features.conv = nn.Conv2d(3, 4, 3)
    model.head = nn.Linear(4, 2)
    return model


# --------------------------------------------------------------------------- live models


def test_live_models_carry_data_config_report_and_one_input_shape_spelling():
    a = popcli.create_model("fc", num_classes=10, input_shape=(1, 28, 28), hidden=[16])
    b = popcli.create_model("fc", num_classes=10, in_chans=1, image_size=28, hidden=[16])  # timm's aliases
    assert a.popcli_data_config == b.popcli_data_config and a.popcli_data_config["input_shape"] == [1, 28, 28]
    assert popcli.create_model("fc", num_classes=10, hidden=[16]).popcli_data_config["input_shape"] == [3, 32, 32]
    assert str(a.popcli_report).splitlines()[1].split()[:3] == ["masked", "layers", "2"]
    assert "12,704 weights" in str(a.popcli_report) and repr(a.popcli_report).startswith("ConversionReport(masked=2 layers")
    assert popcli.create_model("fc", hidden=[16], pretrained=False) is not None
    with pytest.raises(ModelError, match="pretrained=True: popcli searches a mask inside random weights"):
        popcli.create_model("fc", pretrained=True)
    model = popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2), in_chans=3, image_size=8,
                             num_classes=2, class_names=["x", "y"])
    assert model.popcli_data_config["input_shape"] == [3, 8, 8] and model.popcli_data_config["class_names"] == ["x", "y"]
    bare = popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2))
    assert bare.popcli_data_config["input_shape"] is None  # known once a search sees the data


# --------------------------------------------------------------------------- errors that speak Python


class PilImages(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        from PIL import Image

        return Image.new("RGB", (8, 8)), 0


def test_python_api_errors_are_popcli_errors_that_speak_python(tmp_path):
    with pytest.raises(ModelError, match=r"got str; for a registered architecture use popcli.create_model\('resnet18'"):
        popcli.subnetify("resnet18")
    with pytest.raises(ModelError, match="create_model takes a model name"):
        popcli.create_model(nn.Linear(2, 2))
    with pytest.raises(ArtifactError, match="popcli.save writes a torch.nn.Module built by popcli, got str"):
        popcli.save("model.pt", tmp_path / "m.safetensors")
    model, (train, test) = popcli.subnetify(build_with_bias(in_channels=3, image_size=8, num_classes=2)), data()
    with pytest.raises(DataError, match=r"items are \(PIL.Image, int\).*ToTensor"):
        popcli.search(model, PilImages(), test, arch=BIASED, run_dir=tmp_path / "pil", **FAST)
    bad = TensorDataset(train.tensors[0], train.tensors[1] * 3)  # labels 0 and 3, two classes
    with pytest.raises(DataError, match=r"label 3 is outside 0..1: the model has num_classes=2"):
        popcli.search(model, bad, test, arch=BIASED, run_dir=tmp_path / "labels", **FAST)
    with pytest.raises(FileNotFoundError) as err:  # as open() users expect, and a PopcliError (ArtifactError)
        popcli.load(tmp_path / "missing.safetensors")
    assert isinstance(err.value, ArtifactError) and isinstance(err.value, PopcliError)


def test_popcli_search_of_a_recipe_takes_keyword_settings_and_errors_name_arguments(tmp_path):
    overrides = ["data.dataset=synthetic", "data.shape=[1,4,4]", "data.num_classes=2", "data.train_size=64",
                 "data.test_size=16", "data.batch_size=16", "model.hidden=[8]", "search.threads=1"]
    summary = popcli.search(None, run_dir=tmp_path / "run", overrides=overrides, max_steps=3, **{"search.lr": 0.05})
    assert summary["steps"] == 3
    with pytest.raises(RecipeError, match="unknown recipe key 'search.max_step'"):
        popcli.search(None, run_dir=tmp_path / "x", overrides=overrides, max_step=3)
    with pytest.raises(RunExists) as err:
        popcli.search(None, run_dir=tmp_path / "run", overrides=overrides, max_steps=3)
    assert "resume=True" in str(err.value) and "force=True" in str(err.value) and "--" not in str(err.value)
    model = popcli.create_model("fc", num_classes=2, input_shape=(1, 4, 4), hidden=[8])
    popcli.save(model, tmp_path / "m.safetensors")
    with pytest.raises(OutputExists) as err:
        popcli.save(model, tmp_path / "m.safetensors")
    assert "pass force=True" in str(err.value) and "--force" not in str(err.value) and " -o " not in str(err.value)
    from popcli.artifact import save  # below the public API: the CLI's words
    with pytest.raises(OutputExists, match="--force"):
        save(model, tmp_path / "m.safetensors")


# --------------------------------------------------------------------------- tracing


@pytest.mark.parametrize("source", ["create_model", "global_topk", "load_search", "vit"])
def test_subnet_layers_pass_jit_trace_and_torch_export_in_eval_mode(tmp_path, source):
    shape, arch, extra = (1, 8, 8), "conv2", {"width": 0.25}
    if source == "global_topk":
        arch, extra = "fc", {"hidden": [16], "global_topk": True, "batchnorm": True}
    if source == "vit":
        shape, arch, extra = (3, 32, 32), "vit_tiny", {}
    model = popcli.create_model(arch, density=0.3, num_classes=4, input_shape=shape, **extra)
    if source == "load_search":
        popcli.save(model, tmp_path / "m.safetensors")
        model = popcli.load(tmp_path / "m.safetensors", mode="search")
    model.eval()
    x, other = torch.randn(2, *shape), torch.randn(2, *shape)  # export fixes the batch size it saw
    with torch.no_grad():
        want, want_other = model(x), model(other)
    with pytest.warns(Warning):  # torch deprecates jit.trace; it still works
        traced = torch.jit.trace(model, x)
    exported = torch.export.export(model, (x,)).module()
    for run in (traced, exported):
        with torch.no_grad():
            assert torch.equal(run(x), want) and torch.equal(run(other), want_other)  # the mask is in the graph
    with torch.no_grad():
        assert torch.equal(model(x), want)  # eager use afterwards is untouched


def test_tracing_refuses_training_mode_and_other_methods_rules_in_one_line():
    model = popcli.create_model("fc", num_classes=4, input_shape=(1, 8, 8), hidden=[16])
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ModelError, match=r"call model.eval\(\) first") as err:
        torch.export.export(model.train(), (x,))
    assert "\n" not in str(err.value)
    biprop = popcli.create_model("fc", num_classes=4, input_shape=(1, 8, 8), hidden=[16], method="biprop").eval()
    with pytest.raises(ModelError, match="biprop subnet layers do not trace; bake them first"):
        torch.export.export(biprop, (x,))
    baked = popcli.nn.bake_subnets(biprop)
    assert torch.equal(torch.export.export(baked, (x,)).module()(x), baked(x))
