"""A multi-head attention whose projections are subnet layers, so that every mask is really used.

``nn.MultiheadAttention`` reads ``in_proj_weight`` and ``out_proj.weight`` directly (its forward
and nn.TransformerEncoderLayer's fused fast path never call ``out_proj``), so replacing
``out_proj`` by a subnet layer changes nothing. ``SubnetMultiheadAttention`` holds
``in_proj`` (a SubnetLinear [3E, E]: q, k, v stacked as torch stacks them) and ``out_proj`` (a
SubnetLinear [E, E]; either may be a plain Linear once baked or kept dense) and calls ``F.multi_head_attention_forward`` with their effective weights:
same call signature and math as ``nn.MultiheadAttention`` (batch_first, masks, need_weights).
Only the packed form (kdim = vdim = embed_dim, no bias_k/bias_v) is converted; the others are
reported as unhandled by the converter.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import SubnetLinear, SubnetMixin


def _weight(layer: nn.Linear) -> torch.Tensor:
    """The weight a projection multiplies by: masked for a subnet layer, as is for a plain one (baked or kept dense)."""
    return layer.effective_weight() if isinstance(layer, SubnetMixin) else layer.weight


class SubnetMultiheadAttention(nn.Module):
    """nn.MultiheadAttention with masked q/k/v and output projections (see the module docstring)."""

    # False keeps nn.TransformerEncoderLayer off its fused fast path, which would read raw weights.
    _qkv_same_embed_dim = False

    def __init__(self, embed_dim: int, num_heads: int, *, density: float, dropout: float = 0.0, bias: bool = False,
                 batch_first: bool = False, add_zero_attn: bool = False):
        super().__init__()
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.batch_first, self.add_zero_attn, self.head_dim = batch_first, add_zero_attn, embed_dim // num_heads
        self.in_proj = SubnetLinear(embed_dim, 3 * embed_dim, density, bias=bias)
        self.out_proj = SubnetLinear(embed_dim, embed_dim, density, bias=bias)

    @property
    def in_proj_weight(self) -> torch.Tensor:  # read by code written for nn.MultiheadAttention: the masked one
        return _weight(self.in_proj)

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        return self.in_proj.bias

    @classmethod
    def convertible(cls, mha: nn.MultiheadAttention) -> bool:
        return mha._qkv_same_embed_dim and mha.bias_k is None and mha.bias_v is None

    @classmethod
    def from_attention(cls, mha: nn.MultiheadAttention, density: float, bias: bool = False) -> "SubnetMultiheadAttention":
        """Same geometry as ``mha`` (biases kept only with ``bias``); weights copied unless on meta."""
        has_bias = bias and mha.in_proj_bias is not None
        layer = cls(mha.embed_dim, mha.num_heads, density=density, dropout=mha.dropout, bias=has_bias,
                    batch_first=mha.batch_first, add_zero_attn=mha.add_zero_attn)
        if mha.in_proj_weight.device.type != "meta":
            with torch.no_grad():
                layer.in_proj.weight.copy_(mha.in_proj_weight)
                layer.out_proj.weight.copy_(mha.out_proj.weight)
                if has_bias:
                    layer.in_proj.bias.copy_(mha.in_proj_bias)
                    layer.out_proj.bias.copy_(mha.out_proj.bias)
        return layer

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.batch_first:  # [B, L, E] -> [L, B, E], as nn.MultiheadAttention does
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, _weight(self.in_proj), self.in_proj.bias,
            None, None, self.add_zero_attn, self.dropout, _weight(self.out_proj), self.out_proj.bias,
            training=self.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        return (out.transpose(0, 1) if self.batch_first else out), weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"
