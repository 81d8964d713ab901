"""An int8 copy of a verified ONNX graph, and its accuracy and speed against fp32.

``quantize_int8(proto, calibration)`` is ONNX Runtime's static QDQ quantization (uint8
activations calibrated min-max on training images, int8 weights per output channel) with
ternary weights kept exact (``_ternary_weights``); ``report`` writes ``<name>.int8.onnx`` and
measures it against the fp32 graph (accuracy on the test images, batch-64 latency). Nothing prints.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..measure import accuracy, latency
from .graph import INPUT, OnnxError, run, session, write_onnx

CALIBRATION_IMAGES = 512  # training images that calibrate int8 activations


def int8_path(path: Path) -> Path:
    return path.with_name(path.stem + ".int8.onnx")


def _rescale(inits: dict, node, factor: np.ndarray, values: np.ndarray) -> None:
    """Replace a DequantizeLinear's quantized values and multiply its scale by ``factor``."""
    from onnx import numpy_helper

    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    inits[node.input[0]].CopyFrom(numpy_helper.from_array(values, node.input[0]))
    inits[node.input[1]].CopyFrom(numpy_helper.from_array((scale * factor).astype(np.float32), node.input[1]))


def _ternary_weights(model) -> int:
    """Rewrite int8 weights holding only {-q, 0, +q} (per tensor or per channel) as {-1, 0, +1}
    with scales times q: the same dequantized weights, and no int16 overflow in the u8 x s8 pair
    sums of AVX2 kernels without VNNI (255 * 127 * 2 > 32767). An edge-popup subnetwork of signed
    constants is ternary per output channel, batch norm folded or not. The int32 bias that goes
    with it (scale = input scale x weight scale) is requantized on the q-times coarser grid."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    rewritten = 0
    for consumer in model.graph.node:
        weight_dq = producers.get(consumer.input[1]) if len(consumer.input) > 1 else None
        if weight_dq is None or weight_dq.op_type != "DequantizeLinear" or weight_dq.input[0] not in inits:
            continue
        values = numpy_helper.to_array(inits[weight_dq.input[0]])
        magnitudes = np.unique(np.abs(values[values != 0])) if values.dtype == np.int8 else np.zeros(0)
        if magnitudes.size != 1 or magnitudes[0] == 1 or weight_dq.input[1] not in inits:
            continue
        q = np.float32(magnitudes[0])
        bias_dq = producers.get(consumer.input[2]) if len(consumer.input) > 2 else None
        if bias_dq is not None and bias_dq.op_type == "DequantizeLinear" and bias_dq.input[0] in inits:
            bias = numpy_helper.to_array(inits[bias_dq.input[0]])
            _rescale(inits, bias_dq, q, np.round(bias.astype(np.float64) / float(q)).astype(bias.dtype))
        _rescale(inits, weight_dq, q, np.sign(values).astype(np.int8))
        rewritten += 1
    return rewritten


def quantize_int8(model_proto, calibration: Iterable[torch.Tensor]):
    """A static QDQ int8 copy (ONNX Runtime's quantizer): activations uint8 calibrated (min-max)
    on ``calibration`` batches, weights int8 per output channel; ternary weights kept exact."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT: x.numpy().astype(np.float32)} for x in calibration])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model_proto.SerializeToString())
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        except Exception as err:
            raise OnnxError(f"int8 quantization failed ({err.__class__.__name__}: {str(err).splitlines()[0][:200]})") from None
        quantized = onnx.load(str(target))
    _ternary_weights(quantized)
    del quantized.metadata_props[:]
    for entry in model_proto.metadata_props:
        quantized.metadata_props.add().CopyFrom(entry)
    quantized.metadata_props.add().CopyFrom(_prop("popcli.int8", "static QDQ: uint8 activations (min-max), int8 weights "
                                                                  "per channel, ternary ones as {-1, 0, 1}"))
    return quantized


def _prop(key: str, value: str):
    from onnx import StringStringEntryProto

    return StringStringEntryProto(key=key, value=value)


def report(proto, path: Path, x_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor | None,
           force: bool) -> dict[str, Any]:
    """Write ``<name>.int8.onnx`` of ``proto`` calibrated on ``x_train``; its size, accuracy and batch-64
    latency against the fp32 graph. Without labels (``y_test`` None: a user's inputs) the
    accuracies are None and ``top1_agreement`` says how often int8 and fp32 pick the same class.
    ``int8_over_fp32`` is a time ratio: below 1, int8 is faster."""
    quantized = quantize_int8(proto, x_train.split(64))
    target = int8_path(path)
    nbytes = write_onnx(quantized, target, exclusive=not force)
    fp32, int8 = session(proto), session(quantized)
    batch = x_test[:64].repeat(-(-64 // max(1, len(x_test[:64]))), 1, 1, 1)[:64]
    speed = {name: latency(lambda s=sess: run(s, batch), len(batch))["p50_ms"]
             for name, sess in (("fp32", fp32), ("int8", int8))}
    fp32_top1 = torch.as_tensor(run(fp32, x_test)).argmax(1)
    agreement = float((torch.as_tensor(run(int8, x_test)).argmax(1) == fp32_top1).float().mean())
    acc = ({name: accuracy(lambda x, s=sess: run(s, x), x_test, y_test) for name, sess in
            (("fp32", fp32), ("int8", int8))} if y_test is not None else {"fp32": None, "int8": None})
    change = 100 * (acc["int8"] - acc["fp32"]) if y_test is not None else None
    return {"path": str(target), "bytes": nbytes, "fp32_acc": acc["fp32"], "int8_acc": acc["int8"],
            "acc_change_points": change, "top1_agreement": agreement, "batch64_fp32_ms": speed["fp32"],
            "batch64_int8_ms": speed["int8"], "int8_over_fp32": speed["int8"] / speed["fp32"],
            "test_samples": len(x_test)}
