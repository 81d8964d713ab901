"""The compact ONNX file (`popcli export --onnx F --compact`): weights stored as keep and sign bits,
unpacked by standard ops that ONNX Runtime folds at session start, so the graph runs the fp32
graph's own weights: logits equal to the fp32 file's, bit for bit."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from popcli import recipe as recipes
from popcli.data.sample import real_inputs
from popcli.deploy import graph
from popcli.deploy.compact import compact
from popcli.engine.loop import search
from popcli.errors import UsageError
from popcli.export import export

import cli_helpers as cli
from test_onnx import SYNTH, need_fmnist


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two short synthetic searches with BN (folded into each row's scale): signed-constant and kaiming-normal."""
    tmp = tmp_path_factory.mktemp("compact")
    search(recipes.load(None, SYNTH + ["model.init=signed_constant"]), tmp / "signed")
    search(recipes.load(None, SYNTH + ["model.init=kaiming_normal", "search.epochs=1"]), tmp / "kaiming")
    return tmp


def _logits(path: Path, x: torch.Tensor) -> np.ndarray:
    return graph.run(graph.session(path), x)


def _folded_ops(path: Path, tmp: Path) -> set[str]:
    """The op types left after ONNX Runtime's session-start optimizations."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {node.op_type for node in onnx.load(str(tmp / "optimized.onnx")).graph.node}


def test_compact_graph_equals_fp32_graph(runs, tmp_path):
    fp32, small = tmp_path / "fp32.onnx", tmp_path / "small.onnx"
    export(runs / "signed", onnx=fp32)
    report = export(runs / "signed", onnx=small, compact=True)["onnx"]
    assert report["compact"]["packed_weights"] == report["compact"]["weight_tensors"] == 2  # fc1 and out
    assert report["compact"]["fp32_bytes"] == fp32.stat().st_size
    assert report["bytes"] == small.stat().st_size < fp32.stat().st_size
    assert report["parity"]["max_abs_diff"] <= graph.PARITY_ATOL
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(_logits(small, x), _logits(fp32, x))  # the same weights, the same kernels
    assert graph.metadata_of(small)["popcli.compact"].startswith("keep+sign")
    ops = _folded_ops(small, tmp_path)
    assert not ops & {"BitShift", "BitwiseAnd", "Where", "Slice"}, ops  # the unpacking was constant-folded
    stored = {i.name: i for i in onnx.load(str(small)).graph.initializer}
    assert "fc1.weight" not in stored and stored["fc1.weight.keep"].data_type == TensorProto.UINT8


def test_compact_refuses_float_inits_and_writes_nothing(runs, tmp_path):
    with pytest.raises(UsageError, match="--compact .*kaiming_normal.*without --compact"):
        export(runs / "kaiming", onnx=tmp_path / "k.onnx", compact=True)
    assert not list(tmp_path.iterdir())


def test_compact_with_int8_and_dead_units(runs, tmp_path):
    fp32, small = tmp_path / "fp32.onnx", tmp_path / "small.onnx"
    export(runs / "signed", onnx=fp32, prune_dead_units=True)
    report = export(runs / "signed", onnx=small, compact=True, prune_dead_units=True, int8=True)["onnx"]
    assert report["compact"]["packed_weights"] >= 1
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(_logits(small, x), _logits(fp32, x))
    assert Path(report["int8"]["path"]).is_file()  # the int8 file is quantized from the fp32 graph
    with pytest.raises(UsageError, match="--compact shape the ONNX graph"):
        export(runs / "signed", tmp_path / "a.safetensors", compact=True)


def test_cli_compact(runs, tmp_path):
    out = tmp_path / "m.onnx"
    result = cli.run("export", runs / "signed", "--onnx", out, "--compact", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["onnx"]["compact"]["packed_weights"] == 2
    result = cli.run("export", runs / "signed", "--onnx", tmp_path / "t.onnx", "--compact")
    assert result.exit_code == 0 and "keep+sign bits" in result.stdout
    cli.one_line_error(cli.run("export", runs / "kaiming", "--onnx", tmp_path / "k.onnx", "--compact"), 2, "--compact")


def _single_op_model(op: str, weight: np.ndarray, **attrs):
    """A one-node graph ``op(input, weight)`` with ``weight`` as its initializer."""
    if op == "Conv":  # [O, C, 3, 3] over a 5x5 image, no padding
        x_shape, y_shape = [1, weight.shape[1], 5, 5], [1, weight.shape[0], 3, 3]
    elif op == "MatMul" or not attrs.get("transB"):  # [K, N]
        x_shape, y_shape = [2, weight.shape[0]], [2, weight.shape[1]]
    else:  # [N, K]
        x_shape, y_shape = [2, weight.shape[1]], [2, weight.shape[0]]
    node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    model = helper.make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                                                [numpy_helper.from_array(weight, "w")]),
                              opset_imports=[helper.make_opsetid("", 18)])
    return model, x_shape


def _signed_rows(rows: int, k: int, seed: int) -> np.ndarray:
    """[rows, k]: each row +-its own scale where kept (about half), 0 elsewhere."""
    rng = np.random.default_rng(seed)
    kept = rng.random((rows, k)) < 0.5
    sign = np.where(rng.random((rows, k)) < 0.5, -1.0, 1.0)
    scale = rng.uniform(0.1, 2.0, size=(rows, 1))
    return (kept * sign * scale).astype(np.float32)


@pytest.mark.parametrize("op,weight,attrs", [
    ("MatMul", _signed_rows(13, 11, 0).T.copy(), {}),  # [K, N]: rows along the last axis
    ("Gemm", _signed_rows(13, 11, 1).T.copy(), {"transB": 0}),
    ("Gemm", _signed_rows(13, 11, 2), {"transB": 1}),
    ("Conv", _signed_rows(6, 3 * 3 * 3, 3).reshape(6, 3, 3, 3), {}),  # K = 27: rows padded to 4 bytes
])
def test_every_weight_layout_unpacks_bit_for_bit(op, weight, attrs):
    model, x_shape = _single_op_model(op, weight, **attrs)
    small, info = compact(model)
    assert info["packed"] == 1
    x = np.random.default_rng(4).standard_normal(x_shape).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(small.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)


def test_rows_of_two_magnitudes_stay_dense():
    weight = _signed_rows(4, 9, 5)
    weight[2, np.flatnonzero(weight[2])[0]] *= 1.5  # one row with a second magnitude
    model, _ = _single_op_model("Gemm", weight, transB=1)
    small, info = compact(model)
    assert info["packed"] == 0 and [i.name for i in small.graph.initializer] == ["w"]


def test_compact_fmnist_test_set_identical(tmp_path):
    """On the 10,000 Fashion-MNIST test images: the compact graph's predictions (and logits) are the fp32 graph's."""
    need_fmnist()
    recipe = recipes.load(None, ["data.train_size=1024", "search.epochs=1", "model.hidden=[256,128]",
                                 "model.batchnorm=true", "search.density=0.1"])
    search(recipe, tmp_path / "run")
    export(tmp_path / "run", onnx=tmp_path / "fp32.onnx")
    report = export(tmp_path / "run", onnx=tmp_path / "small.onnx", compact=True)["onnx"]
    assert report["compact"]["fp32_bytes"] / report["bytes"] >= 12  # the goal: <= 1/12 of the fp32 file
    x, y, _ = real_inputs(recipe, None, test=10_000, train=0)
    assert len(x) == 10_000
    small, fp32 = _logits(tmp_path / "small.onnx", x), _logits(tmp_path / "fp32.onnx", x)
    np.testing.assert_array_equal(small, fp32)
    assert (small.argmax(1) == y.numpy()).mean() > 0.5  # a real search on real images, not noise


def test_eval_packed_and_compact_rows(runs, tmp_path):
    from popcli.deploy.evaluate import evaluate

    export(runs / "signed", tmp_path / "s.safetensors")
    report = evaluate(tmp_path / "s.safetensors", batch_sizes="1,16")
    accuracy = {row["engine"]: row["top1"] for row in report["accuracy"]}
    assert accuracy["ort_compact"] == accuracy["ort_fp32"]  # the same weights after folding
    assert abs(accuracy["torch_packed"] - accuracy["torch_subnet"]) <= 1 / 128  # sums in another order: ties may flip
    latency = {(row["engine"], row["batch_size"]): row for row in report["latency"]}
    assert ("torch_packed", 1) in latency and ("ort_compact", 16) in latency
    assert latency[("ort_compact", 1)]["session_start_ms"] > 0 and latency[("torch_packed", 1)]["session_start_ms"] is None
    export(runs / "signed", onnx=tmp_path / "c.onnx", compact=True)
    on_file = evaluate(tmp_path / "c.onnx", batch_sizes="2")
    assert [row["engine"] for row in on_file["accuracy"]] == ["ort_compact"]
    assert on_file["accuracy"][0]["top1"] == accuracy["ort_fp32"]
    export(runs / "kaiming", tmp_path / "k.safetensors")
    engines = {row["engine"] for row in evaluate(tmp_path / "k.safetensors", batch_sizes="1")["latency"]}
    assert not engines & {"torch_packed", "ort_compact"}  # float weights: no bits to run from
    text = cli.run("eval", tmp_path / "s.safetensors", "--batch-sizes", "1").stdout
    assert "packed bits" in text and "session start" in text
