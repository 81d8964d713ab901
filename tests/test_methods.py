"""Search methods beyond edge-popup: optimizer defaults, biprop, signed supermask (popcli.methods)."""

from __future__ import annotations

import pytest
import torch

from popcli import methods
from popcli import recipe as recipes
from popcli.optim import make_optimizer
from popcli.recipe import SearchConfig


# --------------------------------------------------------------------------- optimizer defaults


@pytest.mark.parametrize("method", methods.NAMES)
def test_unset_optimizer_keys_take_the_methods_defaults(method):
    r = recipes.load(None, [f"search.method={method}"])  # the quick start sets none of them
    for key in methods.OPTIMIZER_KEYS:
        expected = methods.METHODS[method].optimizer[key]
        if key == "nesterov":  # the quick start sets nesterov: true for its SGD
            expected = True
        assert getattr(r.search, key) == expected, key
    assert all(r.to_dict()["search"][key] is not None for key in methods.OPTIMIZER_KEYS)  # shown resolved


def test_supermask_defaults_are_adam_without_decay_and_explicit_keys_win(tmp_path):
    r = recipes.load(None, ["search.method=supermask"])
    assert (r.search.optimizer, r.search.lr, r.search.weight_decay) == ("adam", 0.1, 0.0)
    r = recipes.load(None, ["search.method=supermask", "search.optimizer=sgd", "search.lr=0.3"])
    assert (r.search.optimizer, r.search.lr, r.search.weight_decay) == ("sgd", 0.3, 0.0)
    path = tmp_path / "r.yaml"
    path.write_text("search: {method: signed-supermask, weight_decay: 0.0}\n")
    r = recipes.load(path)
    assert (r.search.lr, r.search.nesterov, r.search.weight_decay) == (0.05, True, 0.0)
    assert recipes.from_dict(r.to_dict()) == r  # a resolved recipe keeps its values


def test_an_unresolved_config_still_builds_its_methods_optimizer():
    param = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer([param], SearchConfig(method="supermask"))
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["weight_decay"] == 0.0
    opt = make_optimizer([param], SearchConfig(method="biprop"))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


# --------------------------------------------------------------------------- gradients, by hand

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import popcli  # noqa: E402
from popcli.methods import biprop  # noqa: E402
from popcli.nn import SubnetLinear  # noqa: E402


def hand_layer(method: str) -> SubnetLinear:
    """A 2x3 subnet layer with chosen weights and scores; density 0.5 keeps the 3 largest |s|."""
    layer = SubnetLinear(3, 2, density=0.5)
    methods.configure([layer], method)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -2.0, 1.0], [-1.5, 0.25, 3.0]]))
        layer.scores.copy_(torch.tensor([[0.9, -0.8, 0.1], [-0.7, 0.2, -0.05]]))  # kept: 0.9, -0.8, -0.7
    return layer


def test_biprop_forward_and_gradient_by_hand():
    layer = hand_layer("biprop")
    x = torch.tensor([[1.0, 2.0, -1.0]])
    out = layer(x)
    alpha = (0.5 + 2.0 + 1.5) / 3  # mean |w| over the kept weights
    w_eff = torch.tensor([[alpha, -alpha, 0.0], [-alpha, 0.0, 0.0]], dtype=torch.float32)
    assert torch.equal(layer.effective_weight().detach(), w_eff)
    assert torch.allclose(out, x @ w_eff.T)
    out.sum().backward()
    grad_w_eff = torch.ones(2, 1) @ x  # d sum(x W^T) / dW = x for every row
    expected = grad_w_eff * layer.weight * torch.sign(layer.scores)  # sign(s) * grad * w, alpha constant
    assert torch.allclose(layer.scores.grad, expected, rtol=0, atol=1e-7)


def test_signed_supermask_forward_and_gradient_by_hand():
    layer = hand_layer("signed-supermask")
    x = torch.tensor([[1.0, 2.0, -1.0]])
    out = layer(x)
    t = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])  # sign(s) on the top-3 |s|
    assert torch.equal(layer.effective_weight().detach(), layer.weight * t)
    assert torch.allclose(out, x @ (layer.weight * t).T)
    out.sum().backward()
    assert torch.allclose(layer.scores.grad, (torch.ones(2, 1) @ x) * layer.weight, rtol=0, atol=1e-7)  # no sign(s)


def test_biprop_alpha_is_a_fixed_left_to_right_float64_sum():
    w = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    keep = torch.rand(1000, generator=torch.Generator().manual_seed(1)) < 0.3
    expected = np.float32(sum(abs(float(v)) for v in w[keep]) / int(keep.sum()))  # python floats: float64, in order
    assert biprop.alpha(w, keep) == float(expected)
    assert biprop.alpha(w, torch.zeros(1000, dtype=torch.bool)) == 0.0


# --------------------------------------------------------------------------- artifacts and ONNX

from popcli import recipe as _r  # noqa: E402,F811
from popcli.export import export, inspect, model_from_checkpoint  # noqa: E402
from popcli.search import search  # noqa: E402

SYNTH = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=256",
         "data.test_size=128", "data.batch_size=32", "model.arch=fc", "model.hidden=[64]", "search.epochs=2",
         "search.density=0.2", "model.batchnorm=true"]


def synth_run(tmp_path: Path, method: str, *extra: str) -> Path:
    search(_r.load(None, [*SYNTH, f"search.method={method}", *extra]), tmp_path / method)
    return tmp_path / method


@pytest.mark.parametrize("method,extra,onnx", [
    ("biprop", [], True), pytest.param("signed-supermask", [], True, marks=pytest.mark.slow),
    pytest.param("biprop", ["search.global_topk=true"], False, marks=pytest.mark.slow),
    pytest.param("signed-supermask", ["model.arch=conv2", "data.shape=[3,8,8]", "model.width=0.125"], False,
                 marks=pytest.mark.slow)])
def test_save_load_exact_and_onnx_parity(tmp_path, method, extra, onnx):
    run_dir = synth_run(tmp_path, method, *extra)
    report = export(run_dir, tmp_path / "a.safetensors", onnx=tmp_path / "a.onnx" if onnx else None, parity_samples=64)
    assert report["verified"] and report["method"] == method
    if onnx:  # baked weights (biprop: alpha * sign(w) * m; signed: w * t) against PyTorch
        parity = report["onnx"]["parity"]  # checked by the export itself too
        assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    searched, recipe, _, _ = model_from_checkpoint(run_dir / "last.pt")
    loaded = popcli.load(tmp_path / "a.safetensors")
    x = torch.randn(16, 1 if "conv2" not in str(extra) else 3, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(searched(x), loaded(x))
    for (_, a), (_, b) in zip(_subnets(searched), _subnets(loaded)):
        assert torch.equal(a.effective_weight(), b.effective_weight())
    if method == "biprop":  # binary weights: one magnitude per layer
        for _, layer in _subnets(loaded):
            kept = layer.effective_weight()[layer.mask()]
            assert kept.abs().unique().numel() == 1


def _subnets(model):
    from popcli.models import masked_layers

    return masked_layers(model)


@pytest.mark.slow
def test_ternary_mask_file_within_3_percent_of_its_entropy(tmp_path):
    """At 3% kept, the whole signed-supermask file (header included) costs <= 1.03 x the ternary
    entropy of its symbol frequencies (drop / keep / keep inverted)."""
    import json
    import math

    from popcli import artifact
    from popcli.models import build_model

    r = _r.load(None, ["model.hidden=[2048,2048]", "model.batchnorm=false", "search.method=signed-supermask",
                       "search.density=0.03", "model.init=elus_signed_constant"])
    model = build_model(r.model, r.search, in_channels=1, image_size=28, num_classes=10, seed=0).eval()
    art = artifact.save(model, tmp_path / "a.safetensors", recipe=r, data_info={"shape": [1, 28, 28], "num_classes": 10})
    n, kept = art.masked_weights, sum(rec.kept for rec in art.layers)
    inverted = sum(json.loads(art.metadata["method_state"])["inverted"])
    assert 0.4 * kept < inverted < 0.6 * kept  # random scores: signs about half and half
    freqs = [(n - kept) / n, (kept - inverted) / n, inverted / n]
    entropy = -sum(p * math.log2(p) for p in freqs)  # bits per weight
    assert 8 * art.file_bytes / n <= 1.03 * entropy
    loaded = popcli.load(tmp_path / "a.safetensors")
    for (_, a), (_, b) in zip(_subnets(model), _subnets(loaded)):
        assert torch.equal(a.effective_weight(), b.effective_weight())
