"""Subnet layers: straight-through gradient, exact top-k with ties, mask caching."""

import pytest
import torch

from popcli.nn import SubnetConv2d, SubnetLinear, global_topk_masks, kept_count, topk_mask
from popcli.nn import topk as topk_module


def reference_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """Top-k of |scores| by a full stable sort: larger first, lower flat index first among ties."""
    flat = scores.abs().flatten()
    keep = torch.sort(-flat, stable=True).indices[: kept_count(flat.numel(), density)]
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[keep] = True
    return mask.view_as(scores)


def test_straight_through_gradient_hand_computed():
    layer = SubnetLinear(3, 2, density=0.5)
    layer.weight.data = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    layer.scores.data = torch.tensor([[0.1, -0.9, 0.3], [0.5, -0.2, 0.05]])
    # |s| ranks: 0.9 (0,1), 0.5 (1,0), 0.3 (0,2) are the top 3 of 6.
    x = torch.tensor([[1.0, 10.0, 100.0]])
    y = layer(x)
    assert torch.equal(y, torch.tensor([[2.0 * 10 + 3.0 * 100, 4.0 * 1]]))
    y.backward(torch.tensor([[1.0, 2.0]]))
    # grad_weff[o, i] = g_o * x_i; grad_s = sign(s) * grad_weff * w (for every weight, kept or not)
    grad_weff = torch.tensor([[1.0], [2.0]]) * x
    expected = torch.sign(layer.scores.detach()) * grad_weff * layer.weight.detach()
    assert torch.equal(layer.scores.grad, expected)
    assert layer.weight.grad is None and not layer.weight.requires_grad


def test_conv_gradient_matches_autograd_through_abs():
    torch.manual_seed(0)
    conv = SubnetConv2d(2, 3, 3, padding=1, density=0.3)
    conv.weight.data.normal_()
    conv.scores.data.normal_()
    x = torch.randn(2, 2, 5, 5)
    conv(x).square().sum().backward()
    # the same function written with a differentiable surrogate of the mask: w * (m + |s| - |s|.detach())
    s = conv.scores.detach().clone().requires_grad_(True)
    mask = reference_mask(s.detach(), 0.3).float()
    w_eff = conv.weight.detach() * (mask + s.abs() - s.abs().detach())
    torch.nn.functional.conv2d(x, w_eff, padding=1).square().sum().backward()
    torch.testing.assert_close(conv.scores.grad, s.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,density,expected", [(10, 0.5, 5), (10, 0.25, 3), (10, 0.01, 1), (3, 0.5, 2),
                                                (100, 1.0, 100), (7, 0.07, 1), (1000, 0.3, 300)])
def test_kept_count(n, density, expected):
    assert kept_count(n, density) == expected


@pytest.mark.parametrize("n", [1, 5, 1000, 70_000, 300_000])
@pytest.mark.parametrize("density", [0.01, 0.3, 0.5, 0.97])
def test_topk_mask_exact_with_and_without_ties(n, density):
    gen = torch.Generator().manual_seed(n)
    distinct = torch.randn(n, generator=gen)
    tied = torch.randint(-4, 5, (n,), generator=gen).float()  # |s| takes 5 values: massive ties
    for scores in (distinct, tied, torch.zeros(n)):
        mask = topk_mask(scores, density)
        assert int(mask.sum()) == kept_count(n, density)
        assert torch.equal(mask, reference_mask(scores, density))


def test_topk_mask_bracket_fallback_on_adversarial_layout(monkeypatch):
    # sorted scores defeat a strided sample's bracket at small margins: the result must stay exact
    scores = torch.linspace(-1, 1, 200_000)
    monkeypatch.setattr(topk_module, "_SAMPLE", 64)
    assert torch.equal(topk_mask(scores, 0.37), reference_mask(scores, 0.37))


def test_global_topk_counts_and_ties():
    a, b = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([2.0, 5.0, 0.5, 2.0])
    masks = global_topk_masks([a, b], 0.5)  # keep 4 of 7 (round half up of 3.5): 5, 3, then 2 (a) and 2 (b[0])
    assert masks[0].tolist() == [True, False, True] and masks[1].tolist() == [True, True, False, False]


def test_eval_mask_cached_until_scores_change():
    layer = SubnetLinear(8, 4, density=0.5)
    layer.scores.data.normal_()
    layer.eval()
    first = layer.mask()
    assert layer.mask() is first  # cached: no recomputation in eval mode
    with torch.no_grad():
        layer.scores.mul_(-1).add_(torch.randn_like(layer.scores))
    second = layer.mask()
    assert second is not first and torch.equal(second, reference_mask(layer.scores.detach(), 0.5))
    layer.train()
    assert layer.mask() is not layer.mask()  # recomputed every training forward


def test_converters_bake_mask():
    conv = torch.nn.Conv2d(2, 4, 3, bias=True)
    sub = SubnetConv2d.from_conv(conv, density=0.25)
    assert torch.equal(sub.weight, conv.weight) and sub.bias is None
    sub.scores.data.normal_()
    baked = sub.to_conv()
    x = torch.randn(1, 2, 6, 6)
    sub.eval()
    assert torch.equal(baked(x), sub(x))
    lin = SubnetLinear.from_linear(torch.nn.Linear(5, 3), density=0.6)
    lin.scores.data.normal_()
    lin.eval()
    assert torch.equal(lin.to_linear()(torch.ones(2, 5)), lin(torch.ones(2, 5)))


def test_supermask_layer_gradient_and_found_mask():
    layer = SubnetLinear(3, 2, density=0.5)
    layer.sampled = True
    layer.weight.data = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    layer.scores.data = torch.tensor([[0.1, -0.9, 0.3], [0.5, -0.2, 0.05]])
    layer.mask_sample = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    x = torch.tensor([[1.0, 10.0, 100.0]])
    y = layer(x)
    assert torch.equal(y, torch.tensor([[1.0 + 300.0, 50.0 + 600.0]]))  # the sample, not a top-k
    y.backward(torch.tensor([[1.0, 2.0]]))
    p = torch.sigmoid(layer.scores.detach())
    expected = torch.tensor([[1.0], [2.0]]) * x * layer.weight.detach() * p * (1 - p)
    torch.testing.assert_close(layer.scores.grad, expected)
    # the found subnetwork keeps the largest scores (largest sigmoid(s)), signed: 0.5, 0.3, 0.1
    assert layer.mask().tolist() == [[True, False, True], [True, False, False]]
    layer.eval()
    assert torch.equal(layer(x), torch.tensor([[1.0 + 300.0, 4.0]]))


def test_fixed_mask_layer():
    layer = SubnetConv2d(2, 3, 3, padding=1, density=0.5)
    layer.weight.data.normal_()
    mask = torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    layer.fix_mask(mask, int(mask.sum()))
    assert torch.equal(layer.mask(), mask) and layer.scores.numel() == 0 and not layer.scores.requires_grad
    assert layer.density == int(mask.sum()) / mask.numel() and "fixed_mask" not in layer.state_dict()
    x = torch.randn(1, 2, 5, 5)
    expected = torch.nn.functional.conv2d(x, layer.weight * mask.float(), padding=1)
    assert torch.equal(layer(x), expected)
    layer.train()
    assert torch.equal(layer(x), expected)  # frozen: training mode selects nothing
    with pytest.raises(ValueError):
        layer.fix_mask(mask.float())
