"""ONNX graphs of a found subnetwork, verified against PyTorch before they are reported.

``to_onnx(baked, input_shape, metadata)`` exports a baked model (``bake.bake``: masks applied,
BN folded) with torch's dynamo exporter into one self-contained ModelProto: a dynamic batch
dimension, input ``input`` [B, C, H, W], output ``logits`` [B, K], popcli's metadata in
``metadata_props``; it is checked with ``onnx.checker``. ``parity(model_proto, torch_model, x)``
runs ONNX Runtime and PyTorch on real inputs. ``write_onnx`` writes atomically; ``int8`` makes
the quantized copy. Nothing here prints: the exporter's console chatter is captured.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import EXIT_USAGE, PopcliError
from ..storage.atomic import write_atomic

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


def metadata_of(path_or_proto) -> dict[str, str]:
    """The metadata_props of an ONNX file or ModelProto."""
    import onnx

    proto = path_or_proto if hasattr(path_or_proto, "metadata_props") else onnx.load(str(path_or_proto),
                                                                                     load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}
