"""Search methods beyond edge-popup: optimizer defaults, biprop, signed supermask (popcli.methods)."""

from __future__ import annotations

import pytest
import torch

from popcli import methods
from popcli import recipe as recipes
from popcli.engine.optim import make_optimizer
from popcli.recipe import SearchConfig


# --------------------------------------------------------------------------- optimizer defaults


@pytest.mark.parametrize("method", methods.NAMES)
def test_unset_optimizer_keys_take_the_methods_defaults(method):
    density = ["search.density=1.0"] if method == "subspace" else []  # subspace keeps every weight
    r = recipes.load(None, [f"search.method={method}", *density])  # the quick start sets none of them
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
    assert torch.equal(layer.to_linear().weight.detach(), w_eff)  # the converter bakes the same product
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
    assert torch.equal(layer.to_linear().weight.detach(), layer.weight.detach() * t)
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
from popcli.artifact import inspect
from popcli.export import export, model_from_checkpoint  # noqa: E402
from popcli.engine.loop import search  # noqa: E402

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
    loaded = popcli.load(tmp_path / "a.safetensors", mode="search")  # subnet layers, bit for bit
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
    report = inspect(art, verify=False)  # inspect shows the sign stream and the same entropy
    assert report["sign_bytes"] == art.tensors["method.signs"].nbytes
    assert report["ternary_entropy_bits_per_weight"] == pytest.approx(entropy, rel=1e-9)
    loaded = popcli.load(tmp_path / "a.safetensors")
    for (_, a), (_, b) in zip(_subnets(model), _subnets(loaded)):
        assert torch.equal(a.effective_weight(), b.effective_weight())


# --------------------------------------------------------------------------- density schedules

from popcli.errors import RecipeError  # noqa: E402
from popcli.methods.schedule import density_at  # noqa: E402


def test_anneal_schedule_values():
    assert density_at(0.1, "anneal", 2, 0, 10) == 1.0
    assert density_at(0.1, "anneal", 2, 10, 10) == pytest.approx(0.1 + 0.9 * 0.5 ** 3, abs=1e-15)
    assert density_at(0.1, "anneal", 2, 20, 10) == 0.1 == density_at(0.1, "anneal", 2, 999, 10)
    assert density_at(0.1, "constant", 2, 0, 10) == 0.1


@pytest.mark.parametrize("method,extra", [("edge-popup", []), ("biprop", []), ("signed-supermask", []),
                                          ("edge-popup", ["search.global_topk=true"])])
def test_anneal_sets_every_layers_kept_count(method, extra):
    from popcli.methods.schedule import enable
    from popcli.models import build_model, count_params, masked_layers, set_step
    from popcli.nn import kept_count

    r = _r.load(None, ["model.hidden=[64,32]", f"search.method={method}", "search.density=0.1",
                       "search.density_schedule=anneal", "search.density_anneal_epochs=1", *extra])
    model = build_model(r.model, r.search, in_channels=1, image_size=8, num_classes=4, seed=0)
    enable(model, r.search, steps_per_epoch=4)
    x = torch.randn(4, 1, 8, 8)
    for step, expected in ((0, 1.0), (2, 0.1 + 0.9 * 0.5 ** 3), (4, 0.1)):
        set_step(model, step)
        model(x)
        total, kept = count_params(model)
        if "search.global_topk=true" in extra:
            assert kept == kept_count(total, expected)
        else:
            assert kept == sum(kept_count(layer.weight.numel(), expected) for _, layer in masked_layers(model))


@pytest.mark.parametrize("override,fragment", [
    (["search.method=supermask"], "top-k method"), (["search.method=dense"], "top-k method"),
    (["search.density_anneal_epochs=0"], "density_anneal_epochs")])
def test_anneal_schedule_errors(override, fragment):
    with pytest.raises(RecipeError, match=fragment):
        _r.load(None, ["search.density_schedule=anneal", "search.density_anneal_epochs=2", *override])


# --------------------------------------------------------------------------- many masks over one seed

import json as _json  # noqa: E402

from popcli import artifact as _artifact  # noqa: E402
from popcli.artifact import multimask  # noqa: E402
from popcli.errors import ArtifactError  # noqa: E402

TASKS = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=128",
         "data.test_size=64", "data.batch_size=32", "model.arch=fc", "model.hidden=[32]", "search.epochs=1",
         "search.density=0.3"]


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tasks")
    for task in range(3):
        search(_r.load(None, [*TASKS, f"data.permute_task={task}"]), tmp / f"t{task}")
    search(_r.load(None, [*TASKS, "seed=1"]), tmp / "other-seed")
    return tmp


def test_multi_mask_file_loads_each_task_exactly(task_runs, tmp_path):
    specs = [f"t{i}={task_runs / f't{i}'}" for i in range(3)]
    report = export(None, tmp_path / "m.safetensors", masks=specs)
    assert report["verified"] and [m["name"] for m in report["masks"]] == ["t0", "t1", "t2"]
    art = _artifact.read(tmp_path / "m.safetensors")
    assert art.metadata["format_version"] == "3"
    from popcli.data import load_data

    for i in range(3):
        searched, recipe, _, _ = model_from_checkpoint(task_runs / f"t{i}" / "last.pt")
        loaded = popcli.load(tmp_path / "m.safetensors", mask=f"t{i}", mode="search")  # bit for bit
        assert recipe.data.permute_task == i
        x, _ = next(load_data(recipe.data, recipe.seed).test.batches())  # the task's own permuted images
        assert torch.equal(searched(x), loaded(x))
    assert torch.equal(popcli.load(tmp_path / "m.safetensors")(x), popcli.load(tmp_path / "m.safetensors", mask="t0")(x))
    single = export(task_runs / "t1", tmp_path / "t1.safetensors")
    assert report["artifact_bytes"] < 3 * single["artifact_bytes"]  # one header, three masks
    with pytest.raises(ArtifactError, match="holds: t0, t1, t2"):
        popcli.load(tmp_path / "m.safetensors", mask="nope")


def test_multi_mask_refuses_another_seed(task_runs, tmp_path):
    with pytest.raises(ArtifactError, match="seed"):
        export(None, tmp_path / "m.safetensors", masks=[f"a={task_runs / 't0'}", f"b={task_runs / 'other-seed'}"])
    assert not (tmp_path / "m.safetensors").exists()
    # a file whose second mask claims another seed (checksum recomputed) is refused on load, whichever
    # mask is asked for: load verifies every mask, as inspect does
    export(None, tmp_path / "m.safetensors", masks=[f"a={task_runs / 't0'}", f"b={task_runs / 't1'}"])
    from safetensors.numpy import load_file, save_file

    art = _artifact.read(tmp_path / "m.safetensors")
    meta = {k: v for k, v in art.metadata.items() if k != "content_sha256"}
    entry = _json.loads(meta["mask.b"])
    entry["recipe"]["seed"] = "1"
    meta["mask.b"] = _json.dumps(entry)
    tensors = load_file(tmp_path / "m.safetensors")
    meta["content_sha256"] = _artifact.content_sha256(meta, tensors)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    for name in ("a", "b"):
        with pytest.raises(ArtifactError, match="mask 'b' differs from the first mask in its seed"):
            popcli.load(tmp_path / "bad.safetensors", mask=name)
    assert not _artifact.inspect(tmp_path / "bad.safetensors")["verified"]


def test_single_mask_files_still_read_as_one_default_mask(task_runs, tmp_path):
    export(task_runs / "t0", tmp_path / "one.safetensors")
    art = _artifact.read(tmp_path / "one.safetensors")
    assert art.metadata["format_version"] == str(_artifact.FORMAT_VERSION) and art.header.mask_names == ["default"]
    a, b = popcli.load(tmp_path / "one.safetensors"), popcli.load(tmp_path / "one.safetensors", mask="default")
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(a(x), b(x))
    with pytest.raises(ArtifactError, match="no mask named"):
        popcli.load(tmp_path / "one.safetensors", mask="t1")
    for spec, fragment in ((["bad name=x"], "NAME=RUN"), ([f"a={task_runs / 't0'}", f"a={task_runs / 't1'}"], "twice")):
        with pytest.raises(ArtifactError, match=fragment):
            export(None, tmp_path / "x.safetensors", masks=spec)


@pytest.mark.parametrize("name", ["v1_fc_bn_rans", "v1_conv2_packbits", "v1_fc_dense"])
def test_version_1_files_read_as_one_default_mask(name):
    path = Path(__file__).parent / "golden" / f"{name}.safetensors"
    art = _artifact.read(path)
    assert art.metadata["format_version"] == "1" and art.header.mask_names == ["default"]
    assert multimask.select(art, "default").layers == art.layers
    model = popcli.load(path, mask="default")
    assert not model.training
    with pytest.raises(ArtifactError, match="holds: default"):
        popcli.load(path, mask="task1")


def test_inspect_cli_lists_the_masks(task_runs, tmp_path):
    from typer.testing import CliRunner

    from popcli.cli import get_app
    app = get_app()

    specs = [f"--mask=t{i}={task_runs / f't{i}'}" for i in range(2)]
    result = CliRunner().invoke(app, ["export", *specs, "-o", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "m.safetensors"), "--json"])
    report = _json.loads(result.stdout)
    assert [m["name"] for m in report["masks"]] == ["t0", "t1"] and all(m["bytes"] > 0 for m in report["masks"])
    result = CliRunner().invoke(app, ["export", f"--mask=a={task_runs / 't0'}", f"--mask=b={task_runs / 'other-seed'}",
                                      "-o", str(tmp_path / "x.safetensors")])
    assert result.exit_code != 0 and "seed" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_resume_under_an_anneal_schedule_is_exact(tmp_path):
    """The schedule is a function of the global step: an interrupted, resumed biprop run ends in
    the state of an uninterrupted one (scores, optimizer, metrics)."""
    from popcli.storage.checkpoint import load_checkpoint
    from popcli.errors import SearchInterrupted

    recipe = _r.load(None, [*TASKS, "search.method=biprop", "search.epochs=2", "search.density_schedule=anneal",
                            "search.density_anneal_epochs=1.5"])
    search(recipe, tmp_path / "straight")
    steps = []
    with pytest.raises(SearchInterrupted):
        search(recipe, tmp_path / "resumed", should_stop=lambda: len(steps) >= 3,
               on_event=lambda kind, info: steps.append(1) if kind == "step" else None)
    search(recipe, tmp_path / "resumed", resume=True)
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("straight", "resumed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (tmp_path / "straight" / "metrics.jsonl").read_text().count("\n") == 2
    loss = lambda d: [_json.loads(line)["train_loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert loss("straight") == loss("resumed")


@pytest.mark.parametrize("extra", [[], ["search.global_topk=true"]], ids=["per-layer", "global"])
def test_a_run_stopped_during_an_anneal_exports_the_density_its_metrics_measured(tmp_path, extra):
    """max_steps stops the anneal half way: the artifact keeps the density the search reached (not
    the schedule's final one), and re-measuring the file gives the reported test accuracy exactly."""
    from popcli.data import load_data
    from popcli.engine.loop import evaluate
    from popcli.export import export
    from popcli.nn import kept_count

    recipe = _r.load(None, [*TASKS, "search.epochs=4", "search.max_steps=3", "search.density_schedule=anneal",
                            "search.density_anneal_epochs=2", "search.threads=1", *extra])  # 4 steps per epoch
    summary = search(recipe, tmp_path / "run")
    reached = density_at(0.3, "anneal", 2, 2, 4)  # the last step trained is step 2 (0-based)
    assert summary["density_reached"] == reached and reached > 0.5
    art = _artifact.read(export(tmp_path / "run", tmp_path / "a.safetensors")["path"])
    assert art.header.metrics["density_reached"] == reached
    if extra:
        assert sum(r.kept for r in art.layers) == kept_count(sum(r.numel for r in art.layers), reached)
    else:
        assert [r.kept for r in art.layers] == [kept_count(r.numel, reached) for r in art.layers]
    model = popcli.load(tmp_path / "a.safetensors")
    test = load_data(recipe.data, recipe.seed).test
    assert evaluate(model, test)["acc"] == summary["test_acc"] == art.header.metrics["test_acc"]
