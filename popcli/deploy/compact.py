"""The compact ONNX graph: weights stored as their keep and sign bits, unpacked by the graph.

``compact(proto)`` rewrites an fp32 graph of a baked model (``graph.to_onnx``). Every float
weight of a Conv or Gemm/MatMul whose output rows are each +-one value (the signed-constant
family after BN folding: ``nn.packed.pack_rows``) is replaced by three initializers, the same
layout as ``load(mode="packed")``:

    NAME.keep   uint8 [N, ceil(K/8)]  bit j of row n (LSB first) = weight kept
    NAME.sign   uint8 [N, ceil(K/8)]  bit j = the kept weight is negative (0 where dropped)
    NAME.scale  float32 [N, 1]        |weight| of row n

(N output channels, K the weights feeding one: C*kh*kw for a Conv, in_features for a Gemm),
and a subgraph of standard opset-18 ops rebuilds the float weight from them:

    bits(b) = Cast<bool>(Slice(Reshape(BitwiseAnd(BitShift(Unsqueeze(b, 2), [0..7]), 1), [N, -1]), 0..K))
    weight  = Reshape(Where(bits(keep), Where(bits(sign), Neg(scale), scale), 0), shape)

(transposed back for a [K, N] MatMul/Gemm(transB=0) weight). Every input of that subgraph is an
initializer, so ONNX Runtime constant-folds it when the session starts: the graph then runs the
fp32 graph's own weights, bit for bit (+-scale is exact), at its speed. Weights of any other form
(float inits, kept-dense layers) and every other tensor stay as they were. Nothing prints.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..nn.packed import pack_rows

_SHIFTS, _ONE, _ZERO, _START = "popcli.bit_shifts", "popcli.one_u8", "popcli.zero_f32", "popcli.zero_i64"


def _weight_inputs(proto) -> dict[str, bool]:
    """{initializer name: stored transposed ([K, N])} for the weights of Conv, Gemm and MatMul nodes."""
    weights: dict[str, bool] = {}
    for node in proto.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1:
            weights[node.input[1]] = False
        elif node.op_type == "Gemm" and len(node.input) > 1:
            attrs = {a.name: a.i for a in node.attribute}
            weights[node.input[1]] = not attrs.get("transB", 0)
        elif node.op_type == "MatMul":
            weights[node.input[1]] = True
    return weights


def _constants(helper, numpy_helper) -> list:
    return [numpy_helper.from_array(np.arange(8, dtype=np.uint8).reshape(1, 1, 8), _SHIFTS),
            numpy_helper.from_array(np.array(1, dtype=np.uint8), _ONE),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), _ZERO),
            numpy_helper.from_array(np.array([0], dtype=np.int64), _START)]


def _unpack_nodes(helper, numpy_helper, name: str, rows: int, k: int, shape: list[int], transposed: bool):
    """(initializers, nodes) that compute float tensor ``name`` of ``shape`` from NAME.keep/.sign/.scale."""
    inits = [numpy_helper.from_array(np.array([2], dtype=np.int64), f"{name}.unsqueeze"),
             numpy_helper.from_array(np.array([rows, -1], dtype=np.int64), f"{name}.rows"),
             numpy_helper.from_array(np.array([k], dtype=np.int64), f"{name}.k"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), f"{name}.slice_axis"),
             numpy_helper.from_array(np.array(shape, dtype=np.int64), f"{name}.shape")]
    nodes = []
    for part in ("keep", "sign"):
        src, out = f"{name}.{part}", f"{name}.{part}_bits"
        nodes += [helper.make_node("Unsqueeze", [src, f"{name}.unsqueeze"], [f"{out}.u"]),
                  helper.make_node("BitShift", [f"{out}.u", _SHIFTS], [f"{out}.s"], direction="RIGHT"),
                  helper.make_node("BitwiseAnd", [f"{out}.s", _ONE], [f"{out}.a"]),
                  helper.make_node("Reshape", [f"{out}.a", f"{name}.rows"], [f"{out}.r"]),
                  helper.make_node("Slice", [f"{out}.r", _START, f"{name}.k", f"{name}.slice_axis"], [f"{out}.c"]),
                  helper.make_node("Cast", [f"{out}.c"], [out], to=9)]  # 9: BOOL
    flat = f"{name}.rows2d"  # [N, K]
    nodes += [helper.make_node("Neg", [f"{name}.scale"], [f"{name}.negative"]),
              helper.make_node("Where", [f"{name}.sign_bits", f"{name}.negative", f"{name}.scale"], [f"{name}.signed"]),
              helper.make_node("Where", [f"{name}.keep_bits", f"{name}.signed", _ZERO], [flat])]
    if transposed:  # packed as [N, K] = the stored [K, N] weight transposed
        nodes.append(helper.make_node("Transpose", [flat], [name], perm=[1, 0]))
    else:
        nodes.append(helper.make_node("Reshape", [flat, f"{name}.shape"], [name]))
    return inits, nodes


def compact(proto) -> tuple[Any, dict[str, Any]]:
    """(a new ModelProto whose packable weights are stored as bits, {"packed": n, "weights": m,
    "packed_names": [...]}); the input proto is not changed."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    candidates = _weight_inputs(out)
    kept_inits, new_inits, new_nodes, packed = [], [], [], []
    for init in out.graph.initializer:
        if init.name not in candidates or init.data_type != onnx.TensorProto.FLOAT or len(init.dims) < 2:
            kept_inits.append(init)
            continue
        array = numpy_helper.to_array(init)
        transposed = candidates[init.name]
        rows_view = array.T if transposed else array.reshape(array.shape[0], -1)
        bits = pack_rows(torch.from_numpy(np.array(rows_view, dtype=np.float32, order="C")))  # a writable copy
        if bits is None:
            kept_inits.append(init)
            continue
        keep, sign, scale = (t.numpy() for t in bits)
        name = init.name
        new_inits += [numpy_helper.from_array(keep, f"{name}.keep"), numpy_helper.from_array(sign, f"{name}.sign"),
                      numpy_helper.from_array(scale.reshape(-1, 1).astype(np.float32), f"{name}.scale")]
        inits, nodes = _unpack_nodes(helper, numpy_helper, name, rows_view.shape[0], rows_view.shape[1],
                                     list(array.shape), transposed)
        new_inits += inits
        new_nodes += nodes
        packed.append(name)
    info = {"packed": len(packed), "weights": len(candidates), "packed_names": packed}
    if not packed:
        return out, info
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept_inits + _constants(helper, numpy_helper) + new_inits)
    nodes = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes + nodes)  # the unpacking first: the graph stays topologically sorted
    entry = out.metadata_props.add()
    entry.key, entry.value = "popcli.compact", "keep+sign bits (docs/DEPLOY.md)"
    onnx.checker.check_model(out, full_check=True)
    return out, info


__all__ = ["compact"]
