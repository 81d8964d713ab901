"""Eval-speed caching of effective weights and popcli.load's two modes (infer: plain layers, search: scores)."""

import pytest
import torch

import popcli
from popcli import recipe as recipes
from popcli.errors import ArtifactError
from popcli.models import build_model, masked_layers
from popcli.nn import SubnetConv2d, SubnetLinear, SubnetMixin, bake_subnets


def test_eval_caches_the_effective_weight_until_something_changes():
    layer = SubnetLinear(16, 8, density=0.5)
    layer.weight.data.normal_()
    layer.scores.data.normal_()
    layer.eval()
    with torch.no_grad():
        first = layer.effective_weight()
        assert layer.effective_weight() is first  # computed once
        assert torch.equal(first, layer.weight * layer.mask().float())
        layer.scores.mul_(-1)  # a new top-k
        second = layer.effective_weight()
    assert second is not first and torch.equal(second, layer.weight * layer.mask().float())
    with torch.no_grad():
        layer.weight.add_(1.0)  # the weight changed in place (its version counter moved)
        assert torch.equal(layer.effective_weight(), layer.weight * layer.mask().float())
        cached = layer.effective_weight()
    layer.train()
    assert layer._weight_cache is None  # dropped on .train()
    layer.eval()
    with torch.no_grad():
        assert layer.effective_weight() is not cached


def test_eval_with_gradients_still_trains_the_scores():
    layer = SubnetLinear(6, 3, density=0.5)
    layer.weight.data.normal_()
    layer.scores.data.normal_()
    layer.eval()
    layer(torch.randn(2, 6)).sum().backward()  # grad enabled and scores trainable: no cache, straight-through
    assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0


def test_cached_forward_is_bit_identical_and_survives_inference_mode():
    conv = SubnetConv2d(3, 4, 3, padding=1, density=0.3)
    conv.weight.data.normal_()
    conv.scores.data.normal_()
    conv.eval()
    x = torch.randn(2, 3, 6, 6)
    expected = torch.nn.functional.conv2d(x, conv.weight * conv.mask().float(), padding=1)
    with torch.inference_mode():
        assert torch.equal(conv(x), expected)
    conv.fix_mask(conv.mask().clone())
    with torch.inference_mode():
        conv(x)  # the cache is filled inside inference mode ...
    x.requires_grad_(True)
    conv(x).sum().backward()  # ... and still usable by autograd afterwards
    assert x.grad is not None


def test_bake_subnets_gives_frozen_plain_layers_with_the_same_bits():
    model = torch.nn.Sequential(SubnetConv2d(1, 4, 3, density=0.4), torch.nn.ReLU(), torch.nn.Flatten(),
                                SubnetLinear(4 * 6 * 6, 5, density=0.6))
    for layer in model:
        if isinstance(layer, SubnetMixin):
            layer.weight.data.normal_()
            layer.scores.data.normal_()
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    baked = bake_subnets(model)
    assert not any(isinstance(m, SubnetMixin) for m in baked.modules())
    assert type(baked[0]) is torch.nn.Conv2d and type(baked[3]) is torch.nn.Linear
    assert not any(p.requires_grad for p in baked.parameters())
    assert torch.equal(baked(x), expected)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    recipe = recipes.load(None, ["model.arch=fc", "model.hidden=[32]", "model.batchnorm=true", "search.density=0.3"])
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=8, num_classes=4, seed=recipe.seed)
    with torch.no_grad():
        model(torch.randn(64, 1, 8, 8))  # batch-norm statistics
    path = tmp_path_factory.mktemp("infer") / "a.safetensors"
    popcli.save(model, path, recipe=recipe, data_info={"shape": [1, 8, 8], "num_classes": 4})
    return model.eval(), path


def test_load_infer_is_plain_and_exact(saved):
    model, path = saved
    loaded = popcli.load(path, fold_bn=False)  # mode="infer" is the default
    assert not loaded.training and not masked_layers(loaded)
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_search_has_scores_that_select_the_stored_masks(saved):
    model, path = saved
    loaded = popcli.load(path, mode="search")
    found, stored = masked_layers(model), masked_layers(loaded)
    assert [n for n, _ in found] == [n for n, _ in stored]
    for (_, a), (_, b) in zip(found, stored):
        assert b.fixed_mask is None and b.scores.requires_grad and torch.equal(a.mask(), b.mask())
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    loaded.train()
    loaded(x).sum().backward()  # the search can go on
    assert all(layer.scores.grad is not None for _, layer in stored)


def test_load_rejects_an_unknown_mode(saved):
    with pytest.raises(ArtifactError, match="mode='infer'"):
        popcli.load(saved[1], mode="fast")


def test_load_infer_folds_batch_norm_unless_asked_not_to(saved):
    model, path = saved
    folded, exact = popcli.load(path), popcli.load(path, fold_bn=False)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in exact.modules())
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(exact(x), model(x))
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)  # folded in float64, rounded once
