"""Model registry, paper models, torchvision conversions, subnetify/densify and build_model."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

import popcli
from popcli import rng
from popcli.errors import ModelError
from popcli.models import (build_model, count_params, get_model_builder, init_weights, layer_factories, list_models,
                           masked_layers, model_descriptions, refresh_global_masks, regenerate_weights, register_model,
                           weight_layers)
from popcli.nn import SubnetConv2d, SubnetLinear, SubnetMixin, densify, global_topk_masks, kept_count
from popcli.nn import to_subnet_layers as subnetify
from popcli.recipe import ModelConfig, SearchConfig

FAMILIES = {"tv_mobilenet_v3_small", "tv_efficientnet_b0", "tv_convnext_tiny", "tv_regnet_y_400mf", "tv_vit_b_16",
            "tv_vit_tiny"}  # forward+backward, masks, policies and round trips: tests/test_families.py
TORCHVISION = {"tv_resnet18", "tv_resnet50", "tv_resnet101", "tv_wide_resnet50_2"} | FAMILIES


def make(arch: str = "conv4", *, method: str = "edge-popup", density: float = 0.5, channels: int = 3, size: int = 32,
         classes: int = 10, seed: int = 0, init: str = "signed_constant", **search) -> nn.Module:
    width = 1.0 if arch in TORCHVISION else 0.25
    model_cfg = ModelConfig(arch=arch, init=init, width=width, hidden=[32, 16])
    search_cfg = SearchConfig(method=method, density=density, **search)
    return build_model(model_cfg, search_cfg, in_channels=channels, image_size=size, num_classes=classes, seed=seed)


def images(channels: int = 3, size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- every registered model


@pytest.mark.parametrize("method", ["edge-popup", "dense"])
@pytest.mark.parametrize("arch", sorted(set(list_models()) - FAMILIES))
def test_forward_backward_every_model(arch, method):
    size = 64 if arch in TORCHVISION else 32
    model = make(arch, method=method, size=size, classes=7)
    out = model(images(3, size))
    assert out.shape == (2, 7)
    out.square().mean().backward()
    layers = weight_layers(model)
    assert layers
    for name, layer in layers:
        assert layer.bias is None, name
        if method == "edge-popup":
            assert isinstance(layer, SubnetMixin), name
            assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0, name
            assert not layer.weight.requires_grad and layer.weight.grad is None, name
        else:
            assert not isinstance(layer, SubnetMixin), name
            assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, name
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert not module.affine  # the paper's BN: running stats only
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])


def test_registry_errors_list_valid_names():
    with pytest.raises(ModelError, match="conv4.*tv_resnet50"):
        get_model_builder("conv5")
    with pytest.raises(ModelError, match="conv5"):
        make("conv5")
    with pytest.raises(ModelError, match="already registered.*fc"):
        register_model("conv4", "a second conv4")
    assert list_models() == sorted(list_models()) == list(model_descriptions())
    assert list_models("conv*") == ["conv2", "conv4", "conv6", "conv8"] == popcli.list_models("conv*")
    assert {"fc", "conv2", "conv4", "conv6", "conv8", "resnet18"} | TORCHVISION <= set(list_models())
    assert all(isinstance(d, str) and d and "\n" not in d for d in model_descriptions().values())


def test_paper_parameter_counts():
    """The paper's Table 1 (CIFAR-10): Conv2 4.3M, Conv4 2.4M, Conv6 2.3M, Conv8 5.3M weights."""
    factories = layer_factories(0.5)
    counts = {}
    for arch in ("conv2", "conv4", "conv6", "conv8"):
        model = get_model_builder(arch)(in_channels=3, image_size=32, num_classes=10, width=1.0, hidden=[],
                                        batchnorm=False, **factories)
        counts[arch] = sum(layer.weight.numel() for _, layer in weight_layers(model))
    assert counts == {"conv2": 4300992, "conv4": 2425024, "conv6": 2261184, "conv8": 5275840}


@pytest.mark.parametrize("arch", ["fc", "conv2", "conv4", "conv6", "conv8"])
def test_paper_models_on_28x28_grayscale(arch):
    model = make(arch, channels=1, size=28)
    assert model(images(1, 28)).shape == (2, 10)
    if arch == "conv6":  # 28 -> 14 -> 7 -> 3 (floored like MaxPool2d): 64 channels at width 0.25
        assert model.fc1.in_features == 64 * 3 * 3
    if arch == "fc":
        assert model.fc1.in_features == 28 * 28 and model.fc1.out_features == 8  # 32 * 0.25


def test_conv_batchnorm_and_too_small_images():
    model = get_model_builder("conv4")(in_channels=3, image_size=32, num_classes=10, width=0.25, hidden=[],
                                       batchnorm=True, **layer_factories(0.5))
    kinds = [type(m).__name__ for m in model]
    assert kinds[:3] == ["SubnetConv2d", "BatchNorm2d", "ReLU"] and "BatchNorm1d" in kinds
    assert model(images()).shape == (2, 10)
    with pytest.raises(ModelError, match="at least 16 pixels"):
        make("conv8", size=8)


def test_torchvision_options():
    with pytest.raises(ModelError, match="width"):
        get_model_builder("tv_resnet50")(in_channels=3, image_size=64, num_classes=10, width=0.5, hidden=[],
                                      batchnorm=False, **layer_factories(0.5))
    model = make("tv_resnet18", channels=1, size=64, classes=5)
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert isinstance(model.fc, SubnetLinear) and model.fc.bias is None
    assert model(images(1, 64)).shape == (2, 5)


# --------------------------------------------------------------------------- subnetify / densify


def small_net() -> nn.Sequential:
    torch.manual_seed(0)  # tests may use the global RNG; library code may not
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5),
                         nn.BatchNorm1d(5))


def test_subnetify_custom_sequential():
    net = small_net()
    conv_weight = net[0].weight.detach().clone()
    out = subnetify(net, 0.25)
    assert out is net
    assert isinstance(net[0], SubnetConv2d) and isinstance(net[4], SubnetLinear)
    assert net[0].density == 0.25 and net[0].bias is None and torch.equal(net[0].weight, conv_weight)
    assert not net[1].affine and not net[5].affine and net[1].num_features == 4 and net[5].num_features == 5
    assert type(net[5]) is nn.BatchNorm1d
    assert net(images(3, 8)).shape == (2, 5)
    for layer in (net[0], net[4]):  # weights frozen, scores trained
        assert not layer.weight.requires_grad and layer.scores.requires_grad


def test_subnetify_keep_dense_norm_keep_and_root():
    net = subnetify(small_net(), 0.5, keep_dense={"4"}, nonaffine_norms=False)
    assert isinstance(net[0], SubnetConv2d)
    assert type(net[4]) is nn.Linear and net[4].bias is None and net[4].weight.requires_grad
    assert net[1].affine  # nonaffine_norms=False leaves batch norms alone
    net = subnetify(small_net(), 0.5, keep_dense=lambda name, m: isinstance(m, nn.Conv2d))
    assert type(net[0]) is nn.Conv2d and isinstance(net[4], SubnetLinear)
    root = subnetify(nn.Linear(3, 2), 0.5)
    assert isinstance(root, SubnetLinear) and root.in_features == 3
    with pytest.raises(ModelError, match="norms"):
        popcli.subnetify(small_net(), 0.5, norms="affine")


def test_subnetify_meta_torchvision_model():
    state = torch.get_rng_state()
    with torch.device("meta"):
        model = torchvision.models.resnet18(weights=None, num_classes=3)
    model = subnetify(model, 0.5, keep_dense=["conv1"])
    assert torch.equal(state, torch.get_rng_state())
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    assert type(model.conv1) is nn.Conv2d and isinstance(model.layer1[0].conv1, SubnetConv2d)
    assert isinstance(model.layer2[0].downsample[0], SubnetConv2d) and not model.layer2[0].downsample[1].affine
    init_weights(model, 0, "kaiming_normal", 0.5)
    assert model(images(3, 32)).shape == (2, 3)


class _WithTable(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.arange(4.0))  # computed in the constructor: nothing rebuilds it


def test_subnetify_names_unsupported_meta_layer():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), _WithTable())
    with pytest.raises(ModelError, match="_WithTable"):
        subnetify(model, 0.5)  # the LayerNorm is materialized (gamma 1, beta 0 or none); the buffer cannot be


def test_densify_copies_raw_weight():
    net = subnetify(small_net(), 0.25)
    raw = net[0].weight.detach().clone()
    dense = densify(net)
    assert type(dense[0]) is nn.Conv2d and type(dense[4]) is nn.Linear
    assert torch.equal(dense[0].weight, raw)  # the raw weight, not w * mask
    assert dense[0].weight.requires_grad and dense[0].bias is None
    dense(images(3, 8)).sum().backward()
    assert dense[0].weight.grad is not None
    root = densify(SubnetLinear(3, 2))
    assert type(root) is nn.Linear


# --------------------------------------------------------------------------- build_model options


def test_dense_first_and_last():
    model = make("conv4", dense_first=True, dense_last=True)
    names = [name for name, _ in weight_layers(model)]
    assert type(model.conv1) is nn.Conv2d and type(model.out) is nn.Linear
    assert [name for name, _ in masked_layers(model)] == names[1:-1]
    assert torch.equal(model.conv1.weight.detach(), rng.generate_weight(0, "conv1", (16, 3, 3, 3), "signed_constant", 0.5))
    model(images()).sum().backward()
    assert model.conv1.weight.grad is not None and model.out.weight.grad is not None
    total, kept = count_params(model)
    assert kept == model.conv1.weight.numel() + model.out.weight.numel() + sum(
        kept_count(layer.weight.numel(), 0.5) for _, layer in masked_layers(model))


def test_global_topk_exact_and_cached():
    model = make("conv4", density=0.3, global_topk=True)
    layers = [layer for _, layer in masked_layers(model)]
    n_total = sum(layer.weight.numel() for layer in layers)
    model(images())
    masks = [layer.mask() for layer in layers]
    assert sum(int(m.sum()) for m in masks) == round(0.3 * n_total) == kept_count(n_total, 0.3)
    expected = global_topk_masks([layer.scores for layer in layers], 0.3)
    assert all(torch.equal(m, e) for m, e in zip(masks, expected))
    fractions = {round(float(m.float().mean()), 4) for m in masks}
    assert len(fractions) > 1  # per-layer densities differ
    assert count_params(model) == (n_total, round(0.3 * n_total))

    optimizer = torch.optim.SGD(model.parameters(), lr=10.0)
    model(images()).square().mean().backward()
    optimizer.step()  # scores move: the eval forward must see the new global top-k
    model.eval()
    out = model(images())
    expected = global_topk_masks([layer.scores for layer in layers], 0.3)
    assert all(torch.equal(layer.mask(), e) for layer, e in zip(layers, expected))
    cached = [layer.mask() for layer in layers]
    assert torch.equal(model(images()), out)
    assert all(layer.mask() is c for layer, c in zip(layers, cached))  # eval: masks reused
    assert refresh_global_masks(model) and not refresh_global_masks(make("fc"))


def test_init_weights_deterministic_and_portable():
    a, b = make("resnet18", init="kaiming_normal", seed=3), make("resnet18", init="kaiming_normal", seed=3)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    for name, layer in weight_layers(a):
        assert torch.equal(layer.weight.detach(), rng.generate_weight(3, name, layer.weight.shape, "kaiming_normal", 0.5))
    fresh = regenerate_weights(a, 3, "kaiming_normal", 0.5)
    assert set(fresh) == {name for name, _ in masked_layers(a)}
    probe = SubnetConv2d(16, 16, 3, padding=1)
    probe.reset_scores(rng.torch_generator(3, "scores", "layer1.0.conv1"))
    assert torch.equal(a.layer1[0].conv1.scores.detach(), probe.scores.detach())
    c = make("resnet18", init="kaiming_normal", seed=4)
    assert not torch.equal(a.conv1.weight, c.conv1.weight) and not torch.equal(a.conv1.scores, c.conv1.scores)


@pytest.mark.parametrize("arch", ["conv4", "tv_resnet18"])
def test_build_model_leaves_global_rngs_alone(arch):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    make(arch, method="edge-popup", size=64 if arch in TORCHVISION else 32, global_topk=True)
    make(arch, method="dense", size=64 if arch in TORCHVISION else 32)
    assert torch.equal(states[0], torch.get_rng_state())
    assert np.array_equal(states[1], np.random.get_state()[1]) and states[2] == random.getstate()


def test_dense_method_and_bad_density():
    model = make("conv4", method="dense", init="scaled_kaiming_normal", density=0.5)
    assert not masked_layers(model)
    # the dense baseline draws its weights with density 1 (scaled_* inits are not rescaled)
    assert torch.equal(model.conv1.weight.detach(),
                       rng.generate_weight(0, "conv1", model.conv1.weight.shape, "scaled_kaiming_normal", 1.0))
    with pytest.raises(ModelError, match="density"):
        make("conv4", density=0.0)
