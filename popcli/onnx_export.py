"""ONNX graphs of a found subnetwork, verified against PyTorch before they are reported.

``to_onnx(baked, input_shape, metadata)`` exports a baked model (``bake.bake``: masks applied,
BN folded) with torch's dynamo exporter into one self-contained ModelProto: a dynamic batch
dimension, input ``input`` [B, C, H, W], output ``logits`` [B, K], popcli's metadata in
``metadata_props``; it is checked with ``onnx.checker``. ``parity(model_proto, torch_model, x)``
runs ONNX Runtime and PyTorch on real inputs. ``quantize_int8`` makes a static QDQ int8 copy
calibrated on training images. ``write_onnx`` writes atomically. Nothing here prints: the
exporter's console chatter is captured.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .checkpoint import write_atomic
from .errors import EXIT_USAGE, PopcliError

OPSET = 18
INPUT, OUTPUT = "input", "logits"
PARITY_ATOL = 1e-4  # max |ONNX Runtime - PyTorch| logit difference accepted for fp32 graphs


class OnnxError(PopcliError):
    """An export that failed, or a graph that does not match PyTorch."""


class OnnxOptionError(OnnxError):
    """An option the export cannot use, e.g. an unavailable provider (exit 2, a usage error)."""

    exit_code = EXIT_USAGE


def to_onnx(baked: torch.nn.Module, input_shape: tuple[int, int, int], metadata: dict[str, str]):
    """The verified ModelProto of ``baked`` (eval mode) for inputs [B, *input_shape]."""
    import onnx

    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(baked.eval(), (example,), None, dynamo=True, external_data=False,
                                        input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
                                        dynamic_shapes=({0: batch},), verbose=False)
    except Exception as err:  # the exporter raises many types
        raise OnnxError(f"torch.onnx export failed ({err.__class__.__name__}: {str(err).splitlines()[0][:200]})") from None
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "popcli"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise OnnxError(f"the exported graph fails onnx.checker: {str(err).splitlines()[0][:200]}") from None
    return proto


def session(model, threads: int | None = None, provider: str = "CPUExecutionProvider"):
    """An ONNX Runtime session for a ModelProto, bytes or path, on ``threads`` intra-op threads."""
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise OnnxOptionError(f"execution provider {provider!r} is not available; this onnxruntime has: "
                        f"{', '.join(ort.get_available_providers())}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, options, providers=[provider])


def run(sess, x: torch.Tensor | np.ndarray) -> np.ndarray:
    data = x.numpy() if isinstance(x, torch.Tensor) else x
    return sess.run([OUTPUT], {INPUT: np.ascontiguousarray(data, dtype=np.float32)})[0]


def parity(model_proto, torch_model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Max |logit difference| and top-1 agreement of ONNX Runtime vs PyTorch on ``inputs``."""
    sess = session(model_proto)
    worst, agree = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            x = inputs[start:start + batch_size]
            expected = torch_model(x).numpy()
            got = run(sess, x)
            worst = max(worst, float(np.abs(got - expected).max()))
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
    return {"samples": len(inputs), "max_abs_diff": worst, "top1_agreement": agree / max(1, len(inputs))}


def check_parity(report: dict[str, float], what: str = "ONNX Runtime") -> None:
    if report["max_abs_diff"] > PARITY_ATOL:
        raise OnnxError(f"{what} differs from PyTorch by up to {report['max_abs_diff']:.2e} on "
                        f"{report['samples']} inputs (tolerance {PARITY_ATOL:g}); nothing was written")


def write_onnx(proto, path: Path, *, exclusive: bool = False) -> int:
    """Write one self-contained .onnx file atomically (``exclusive``: only if it does not exist); its size."""
    data = proto.SerializeToString()
    write_atomic(Path(path), data, exclusive=exclusive)
    return len(data)


# --------------------------------------------------------------------------- int8


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


def metadata_of(path_or_proto) -> dict[str, str]:
    """The metadata_props of an ONNX file or ModelProto."""
    import onnx

    proto = path_or_proto if hasattr(path_or_proto, "metadata_props") else onnx.load(str(path_or_proto),
                                                                                     load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}
