"""Subnet layers (straight-through top-k), converters and batch-norm folding.

``layers`` (SubnetConv2d / SubnetLinear and the shared SubnetMixin), ``attention`` (masked
multi-head attention), ``topk`` (the O(n) selection), ``fused`` + ``cpu_kernels`` (the CPU
training passes in C), ``convert`` (any module to subnet layers and back), ``fold`` (batch norm
into the layer before it), ``packed`` (layers run from keep and sign bits). Imports only ``popcli.errors`` and ``popcli.kernels``.
"""

from .layers import (
    NonAffineBatchNorm1d,
    NonAffineBatchNorm2d,
    SubnetConv2d,
    SubnetLinear,
    SubnetMixin,
    is_subnet,
)
from .attention import SubnetMultiheadAttention
from .convert import KeepDense, bake_subnets, densify, to_subnet_layers
from .packed import PackedConv2d, PackedLinear, pack_model, resident_bytes
from .topk import global_topk_masks, kept_count, topk_mask

__all__ = [
    "KeepDense", "NonAffineBatchNorm1d", "NonAffineBatchNorm2d", "SubnetConv2d", "SubnetLinear", "SubnetMixin",
    "SubnetMultiheadAttention", "is_subnet", "bake_subnets", "densify", "to_subnet_layers", "global_topk_masks",
    "kept_count", "topk_mask", "PackedConv2d", "PackedLinear", "pack_model", "resident_bytes",
]
