"""ONNX export (bake, BN folding, dead units, int8) and popcli eval, on real data where it matters."""

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import popcli
from popcli.deploy import graph as onnx_export
from popcli import recipe as recipes
from popcli.deploy.bake import bake, count, prune_dead_units
from popcli.deploy.evaluate import EvalError, evaluate
from popcli.data.sample import real_inputs
from popcli.errors import PopcliError
from popcli.export import export
from popcli.models import build_model
from popcli.engine.loop import search

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SYNTH = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=256",
         "data.test_size=128", "data.batch_size=32", "model.arch=fc", "model.hidden=[64]", "search.lr=0.05",
         "search.epochs=2", "model.batchnorm=true"]


def need_fmnist():
    if not FMNIST.exists():
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST is missing on CI; install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed")


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("onnx")
    search(recipes.load(None, SYNTH), tmp / "run")
    export(tmp / "run", tmp / "a.safetensors")
    return tmp


# --------------------------------------------------------------------------- baking


@pytest.mark.parametrize("arch,size", [("fc", 28), ("conv4", 28), ("resnet18", 16), ("tv_resnet18", 32)])
def test_bake_folds_bn_and_matches(arch, size):
    recipe = recipes.load(None, [f"model.arch={arch}", "model.batchnorm=true", "search.density=0.2", "model.width=0.25"
                                 if arch != "tv_resnet18" else "model.width=1"])
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=size, num_classes=10, seed=0)
    x = torch.randn(8, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x)  # training-mode forward: batch norms get real running statistics
        model.eval()
        baked = bake(model)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in baked.modules())
        torch.testing.assert_close(baked(x), model(x), rtol=1e-5, atol=1e-6)  # folding is float64, rounded once


def test_dead_units_removed_exactly():
    recipe = recipes.load(None, ["model.arch=fc", "model.hidden=[256,256]", "model.batchnorm=true", "search.density=0.02"])
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=28, num_classes=10, seed=0)
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x)
        model.eval()
        baked = bake(model)
        before = count(baked, (1, 28, 28))
        removed = prune_dead_units(baked)
        after = count(baked, (1, 28, 28))
        assert removed > 0 and after["params"] < before["params"] and after["flops"] < before["flops"]
        torch.testing.assert_close(baked(x), model(x), rtol=1e-5, atol=1e-6)
    recipe = recipes.load(None, ["model.arch=conv2", "search.density=0.01", "model.width=0.25"])
    conv = build_model(recipe.model, recipe.search, in_channels=1, image_size=28, num_classes=10, seed=0).eval()
    baked = bake(conv)
    assert prune_dead_units(baked) > 0
    with torch.no_grad():
        torch.testing.assert_close(baked(x), conv(x), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- export


def test_onnx_export_from_run_and_artifact(synth_run):
    report = export(synth_run / "run", onnx=synth_run / "m.onnx")["onnx"]
    assert report["parity"]["max_abs_diff"] <= 1e-4 and report["parity"]["top1_agreement"] == 1.0
    proto = onnx.load(str(synth_run / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [p.name for p in proto.graph.input] == ["input"] and [p.name for p in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a dynamic batch dimension
    assert proto.opset_import[0].version == onnx_export.OPSET
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    assert not [p for p in synth_run.iterdir() if p.name.endswith((".data", ".tmp"))]  # one self-contained file
    meta = onnx_export.metadata_of(proto)
    assert meta["popcli.seed"] == "0" and meta["popcli.density"] == "0.5" and len(meta["popcli.source_sha256"]) == 64
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # folded
    again = export(synth_run / "a.safetensors", onnx=synth_run / "n.onnx")  # from the artifact alone
    assert again["onnx"]["parity"]["max_abs_diff"] <= 1e-4
    meta = onnx_export.metadata_of(synth_run / "n.onnx")
    assert meta["popcli.source_sha256"] == popcli.artifact.read(synth_run / "a.safetensors").header.content_sha256
    sess = onnx_export.session(synth_run / "n.onnx")
    model = popcli.load(synth_run / "a.safetensors")
    for batch in (1, 7):
        x = torch.randn(batch, 1, 8, 8)
        np.testing.assert_allclose(onnx_export.run(sess, x), model(x).detach().numpy(), atol=1e-4)


def test_parity_failure_leaves_no_file(synth_run, monkeypatch):
    monkeypatch.setattr(onnx_export, "PARITY_ATOL", -1.0)
    with pytest.raises(PopcliError, match="differs from PyTorch"):
        export(synth_run / "run", onnx=synth_run / "bad.onnx")
    assert not (synth_run / "bad.onnx").exists()
    assert not [p for p in synth_run.iterdir() if p.name.endswith(".tmp")]


def test_export_option_errors(synth_run):
    with pytest.raises(PopcliError, match="nothing to write"):
        export(synth_run / "run")
    with pytest.raises(PopcliError, match="add --onnx"):
        export(synth_run / "run", synth_run / "x.safetensors", int8=True)
    with pytest.raises(PopcliError, match="already an artifact"):
        export(synth_run / "a.safetensors", synth_run / "y.safetensors")
    with pytest.raises(PopcliError, match="does not exist"):
        export(synth_run / "run", onnx=synth_run / "nope" / "m.onnx")


def test_int8_ternary_weights_and_accuracy(synth_run):
    report = export(synth_run / "run", onnx=synth_run / "q.onnx", int8=True, force=True)["onnx"]["int8"]
    assert abs(report["acc_change_points"]) <= 5.0 and report["test_samples"] == 128
    proto = onnx.load(report["path"])
    weights = [numpy_helper.to_array(i) for i in proto.graph.initializer if i.name.endswith("weight_quantized")]
    assert weights and all(set(np.unique(w)) <= {-1, 0, 1} for w in weights)  # signed constants: exact ternary
    assert "popcli.int8" in onnx_export.metadata_of(proto)


@pytest.mark.slow
@pytest.mark.parametrize("arch,extra", [("conv4", []), ("resnet18", ["model.width=0.5"])])
def test_parity_on_1000_real_images(tmp_path, arch, extra):
    need_fmnist()
    recipe = recipes.load(None, [f"model.arch={arch}", *extra, "model.init=kaiming_normal"])
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=28, num_classes=10, seed=0)
    x, _, train = real_inputs(recipe, None, test=1000, train=512)
    with torch.no_grad():
        model(train)  # real batch-norm statistics
    popcli.save(model, tmp_path / "a.safetensors", recipe=recipe, data_info={"shape": [1, 28, 28], "num_classes": 10})
    report = export(tmp_path / "a.safetensors", onnx=tmp_path / "m.onnx", parity_samples=1000)
    parity = report["onnx"]["parity"]
    assert parity["samples"] == 1000 and parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    sess = onnx_export.session(tmp_path / "m.onnx")
    with torch.no_grad():
        expected = popcli.load(tmp_path / "a.safetensors")(x).numpy()
    got = np.concatenate([onnx_export.run(sess, x[i:i + 250]) for i in range(0, 1000, 250)])
    assert np.abs(got - expected).max() <= 1e-4 and (got.argmax(1) == expected.argmax(1)).all()


# --------------------------------------------------------------------------- eval


def test_eval_reports_search_accuracy_and_latency(synth_run):
    report = evaluate(synth_run / "a.safetensors", batch_sizes="1,4", int8=True)
    summary = json.loads((synth_run / "run" / "summary.json").read_text())
    accuracy = {row["engine"]: row["top1"] for row in report["accuracy"]}
    assert accuracy["torch_subnet"] == summary["test_acc"] == report["search_acc"]
    assert accuracy["ort_fp32"] == summary["test_acc"]
    assert "ort_int8" in accuracy
    engines = {(row["engine"], row["batch_size"]) for row in report["latency"]}
    assert ("ort_fp32", 4) in engines and ("torch_dense", 1) in engines
    row = report["latency"][0]
    assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["reps"] >= 30 and row["threads"] >= 1
    assert (row["engine"], row["runtime"], row["device"]) == ("torch_subnet", "pytorch", "cpu")
    assert report["machine"]["cpu"] and "sparsity" in report["note"]
    export(synth_run / "a.safetensors", onnx=synth_run / "e.onnx", force=True)
    onnx_report = evaluate(synth_run / "e.onnx", batch_sizes="2")
    assert onnx_report["kind"] == "onnx" and onnx_report["accuracy"][0]["engine"] == "ort_fp32"
    assert onnx_report["accuracy"][0]["top1"] == summary["test_acc"]


@pytest.mark.parametrize("kwargs,fragment", [
    ({"batch_sizes": "0"}, "positive integers"),
    ({"batch_sizes": "one"}, "positive integers"),
    ({"provider": "TensorrtExecutionProvider"}, "not available"),
    ({"limit": 0}, "--limit"),
    ({"dataset": "fashion-mnist", "data_dir": "/nonexistent"}, "does not exist"),
    ({"dataset": "cifar10", "data_dir": "."}, "not found|inputs"),
])
def test_eval_bad_input(synth_run, kwargs, fragment):
    with pytest.raises(PopcliError, match=fragment):
        evaluate(synth_run / "a.safetensors", **kwargs)


def test_eval_rejects_foreign_onnx_and_shape_mismatch(synth_run, tmp_path):
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    proto = onnx_export.to_onnx(plain, (1, 8, 8), {})
    (tmp_path / "foreign.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(EvalError, match="without popcli's metadata"):
        evaluate(tmp_path / "foreign.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    with pytest.raises(EvalError, match="neither an artifact nor an ONNX"):
        evaluate(tmp_path / "junk.onnx")
    if FMNIST.exists():
        with pytest.raises(EvalError, match="takes inputs"):
            evaluate(synth_run / "a.safetensors", dataset="fashion-mnist")


def test_eval_accuracies_top5_by_hand():
    from rich.console import Console

    from popcli.measure import accuracies
    from popcli.cli.tables import eval_tables

    # 4 images, 7 classes; each label's rank under its logits (0 = best): 0, 2, 4, 6
    logits = torch.tensor([[9., 1, 2, 3, 4, 5, 6], [5., 9, 0, 0, 0, 0, 6], [9., 8, 7, 6, 5, 0, 0], [9., 8, 7, 6, 5, 4, 3]])
    labels = torch.tensor([0, 0, 4, 6])
    assert accuracies(lambda x: logits[x.long()], torch.arange(4), labels, batch_size=3) == (0.25, 0.75)
    assert accuracies(lambda x: logits[x.long(), :5], torch.arange(4), torch.tensor([0, 0, 4, 1]))[1] is None
    report = {"test_images": 4, "dataset": "d", "accuracy": [{"engine": "e", "label": "e", "top1": 0.25, "top5": 0.75}],
              "search_acc": None,
              "machine": {"cpu": "c"}, "threads": 1, "provider": "p", "latency": [], "note": "n"}
    console = Console(width=120, record=True)
    console.print(eval_tables(report)[0])
    text = console.export_text()
    assert "top-5" in text and "75.00%" in text


def test_eval_has_no_top5_for_few_classes(synth_run):
    assert all(row["top5"] is None for row in evaluate(synth_run / "a.safetensors", batch_sizes="1")["accuracy"])
