"""Subnet layers (straight-through top-k) and converters. Imports nothing from popcli but errors."""

from .layers import (
    NonAffineBatchNorm1d,
    NonAffineBatchNorm2d,
    SubnetConv2d,
    SubnetLinear,
    SubnetMixin,
    is_subnet,
)
from .attention import SubnetMultiheadAttention
from .convert import bake_subnets, densify, subnetify
from .topk import global_topk_masks, kept_count, topk_mask

__all__ = [
    "NonAffineBatchNorm1d", "NonAffineBatchNorm2d", "SubnetConv2d", "SubnetLinear", "SubnetMixin", "SubnetMultiheadAttention",
    "is_subnet", "bake_subnets", "densify", "subnetify", "global_topk_masks", "kept_count", "topk_mask",
]
