"""Models that describe themselves: create_model / subnetify -> save without a recipe -> exact load,
with the preprocessing (mean, std, input shape, classes) in the artifact and the ONNX metadata."""

import json

import pytest
import torch

import popcli
from popcli import artifact
from popcli.deploy import graph as onnx_export
from popcli import recipe as recipes
from popcli.export import export
from popcli.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("options", [{}, {"global_topk": True, "density": 0.3}, {"dense_last": True},
                                     {"method": "supermask"}])
def test_create_model_save_load_is_exact(tmp_path, options):
    model = popcli.create_model("conv2", **{"density": 0.5, **options}, num_classes=3, in_chans=3, image_size=8,
                                width=0.25, seed=5, init="kaiming_normal")
    x = torch.randn(4, 3, 8, 8)
    model.eval()
    popcli.save(model, tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(popcli.load(tmp_path / "m.safetensors", fold_bn=False)(x), model(x))
        assert torch.equal(popcli.load(tmp_path / "m.safetensors", mode="search")(x), model(x))


def test_subnetify_with_arch_describes_itself(tmp_path):
    import torchvision

    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=3, hidden_dim=192,
                                               mlp_dim=768, num_classes=5)
    model = popcli.subnetify(vit, 0.4, seed=3, biases="train", arch="tv_vit_tiny", input_shape=[3, 32, 32], num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    popcli.save(model, tmp_path / "v.safetensors")
    with torch.no_grad():
        assert torch.equal(popcli.load(tmp_path / "v.safetensors")(x), model(x))  # no batch norm: folding changes nothing


@pytest.mark.slow  # an ONNX export with its parity check
def test_preprocessing_in_artifact_onnx_and_loaded_model(tmp_path):
    model = popcli.create_model("conv2", density=0.5, num_classes=3, in_chans=3, image_size=8, width=0.25,
                                mean=[0.5, 0.4, 0.3], std=[0.25, 0.2, 0.2], class_names=["cat", "dog", "eel"])
    path = tmp_path / "m.safetensors"
    art = popcli.save(model.eval(), path)
    expected = {"input_shape": [3, 8, 8], "num_classes": 3, "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.2],
                "pixel_scale": 255, "class_names": ["cat", "dog", "eel"], "dataset": None}
    assert json.loads(art.metadata["preprocessing"]) == expected
    assert popcli.load(path).popcli_data_config == expected == popcli.load(path, mode="search").popcli_data_config
    export(path, onnx=tmp_path / "m.onnx", parity_samples=16)
    meta = onnx_export.metadata_of(tmp_path / "m.onnx")
    assert json.loads(meta["popcli.mean"]) == expected["mean"] and json.loads(meta["popcli.std"]) == expected["std"]
    assert json.loads(meta["popcli.input_shape"]) == [3, 8, 8] and meta["popcli.num_classes"] == "3"
    assert json.loads(meta["popcli.class_names"]) == ["cat", "dog", "eel"]
    assert json.loads(meta["popcli.preprocessing"]) == expected


def _without_preprocessing(src, dst):
    """The same artifact as a file written before the preprocessing key existed (checksum recomputed)."""
    from safetensors.numpy import load_file, save_file

    meta = dict(artifact.read(src).metadata)
    del meta["preprocessing"]
    tensors = load_file(str(src))
    meta["content_sha256"] = artifact.content_sha256(meta, tensors)
    save_file(tensors, str(dst), metadata=meta)


def test_recipe_models_get_their_dataset_preprocessing_and_old_files_still_load(tmp_path):
    recipe = recipes.load(None, ["model.arch=fc", "model.hidden=[16]"])  # fashion-mnist
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=28, num_classes=10, seed=0).eval()
    popcli.save(model, tmp_path / "f.safetensors", recipe=recipe, data_info={"shape": [1, 28, 28], "num_classes": 10})
    config = popcli.load(tmp_path / "f.safetensors").popcli_data_config
    assert config["mean"] == [0.286] and config["std"] == [0.353] and config["class_names"][9] == "Ankle boot"
    _without_preprocessing(tmp_path / "f.safetensors", tmp_path / "old.safetensors")
    assert "preprocessing" not in artifact.read(tmp_path / "old.safetensors").metadata
    assert popcli.load(tmp_path / "old.safetensors").popcli_data_config == config  # derived from its recipe
