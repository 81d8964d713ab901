"""``popcli.load(path, model=my_module)`` (issue 20, section 2): an artifact loaded into the user's
own skeleton, as ``load_state_dict`` and timm's ``load_checkpoint`` work, its structure checked
(masked layers, every other tensor) with a clear error on mismatch; ``popcli.save`` of any
subnetified model, also one popcli cannot rebuild by name (the file records no builder).
The ViT round trip: subnetify(torchvision ViT) -> save -> load(model=) -> the same logits."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torchvision

import popcli
from popcli.artifact import inspect, read
from popcli.errors import ArtifactError, PopcliError

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def vit(hidden: int = 32, layers: int = 2) -> nn.Module:
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=layers, num_heads=2,
                                                hidden_dim=hidden, mlp_dim=64, num_classes=10)


class SmallNet(nn.Module):
    """Conv + batch norm + biases + a parameter that is neither: every policy of subnetify at work."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.scale = nn.Parameter(torch.ones(8, 1, 1))
        self.head = nn.Linear(8 * 32 * 32, 10)

    def forward(self, x):
        return self.head(torch.flatten(torch.relu(self.bn(self.conv(x)) * self.scale), 1))


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


@pytest.fixture(scope="module")
def saved_vit(tmp_path_factory):
    model = popcli.subnetify(vit(), density=0.5, seed=3, input_shape=[3, 32, 32], num_classes=10)
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    popcli.save(model, path)
    return path, logits(model)


def test_vit_round_trip_gives_the_same_logits(saved_vit):
    path, expected = saved_vit
    art = read(path)
    assert art.recipe.model.arch == "" and art.header.model_source is None  # the file records no builder
    for mode in ("infer", "search"):
        assert torch.equal(logits(popcli.load(path, model=vit(), mode=mode)), expected), mode
    again = popcli.subnetify(vit(), density=0.5, seed=3)  # an already subnetified module: used as it is
    assert torch.equal(logits(popcli.load(path, model=again)), expected)


def test_a_file_with_no_builder_says_to_pass_a_model(saved_vit):
    path, _ = saved_vit
    with pytest.raises(ArtifactError, match=r"records no model builder.*popcli\.load\(path, model=my_module\)"):
        popcli.load(path)
    report = inspect(path)
    assert report["verified"] and report["builder"]["kind"] == "none" and report["structure_checked"] is False


def test_a_loaded_model_saves_again_and_loads_the_same(saved_vit, tmp_path):
    path, expected = saved_vit
    loaded = popcli.load(path, model=vit(), mode="search")
    popcli.save(loaded, tmp_path / "again.safetensors")
    assert torch.equal(logits(popcli.load(tmp_path / "again.safetensors", model=vit())), expected)


@pytest.mark.parametrize("other,fragment", [
    (lambda: vit(hidden=48), "the model has masked layer 'conv_proj' [48, 3, 8, 8] where the file has masked layer "
                             "'conv_proj' [32, 3, 8, 8]"),
    (lambda: vit(layers=1), "(6 vs 10 masked layers)"),
    (lambda: SmallNet(), "the model has no masked layer where the file has masked layer 'conv_proj' [32, 3, 8, 8]"),
])
def test_a_model_that_differs_is_refused_naming_the_first_difference(saved_vit, other, fragment):
    path, _ = saved_vit
    with pytest.raises(ArtifactError) as info:
        popcli.load(path, model=other())
    message = str(info.value)
    assert fragment in message and "the given model does not match the file" in message and "\n" not in message


def test_a_model_with_other_tensors_is_refused(saved_vit):
    path, _ = saved_vit
    model = vit()
    model.register_buffer("extra", torch.zeros(3))
    with pytest.raises(ArtifactError, match="tensor 'extra' is missing from the file for the given model"):
        popcli.load(path, model=model)
    with pytest.raises(ArtifactError, match="model= must be a torch.nn.Module"):
        popcli.load(path, model="vit_b_16")


@pytest.mark.parametrize("policies", [dict(biases="train", norms="train", params="train", keep_dense=["head"]),
                                      dict(biases="frozen", norms="nonaffine", params="frozen"),
                                      dict(biases="drop", norms="nonaffine", params="train")])
def test_every_policy_round_trips_through_a_plain_module(tmp_path, policies):
    torch.manual_seed(0)  # SmallNet's own init: replaced by popcli's draws, so it does not matter
    model = popcli.subnetify(SmallNet(), density=0.3, seed=1, input_shape=[3, 32, 32], num_classes=10, **policies)
    with torch.no_grad():  # trained values of what the policies keep and store
        for name, p in model.named_parameters():
            if p.requires_grad and not name.endswith("scores"):
                p.add_(0.25)
        model.bn.running_mean.add_(0.5) if model.bn.running_mean is not None else None
    expected = logits(model)
    popcli.save(model, tmp_path / "s.safetensors")
    loaded = popcli.load(tmp_path / "s.safetensors", model=SmallNet(), fold_bn=False)
    assert torch.equal(logits(loaded), expected)
    meta = json.loads(read(tmp_path / "s.safetensors").metadata["recipe"])["model"]
    assert (meta["biases"], meta["norms"], meta["params"]) == (policies["biases"], policies["norms"], policies["params"])


def test_a_file_with_a_builder_loads_into_a_given_module_too(tmp_path):
    model = popcli.create_model("conv2", density=0.4, num_classes=10, in_chans=3, image_size=32, width=0.25)
    popcli.save(model, tmp_path / "c.safetensors")
    own = popcli.create_model("conv2", density=0.4, num_classes=10, in_chans=3, image_size=32, width=0.25, seed=9)
    assert torch.equal(logits(popcli.load(tmp_path / "c.safetensors", model=own)), logits(model))
    with pytest.raises(PopcliError, match="given model does not match"):
        popcli.load(tmp_path / "c.safetensors", model=popcli.create_model("conv2", num_classes=10, width=0.5))
