"""Layers run from their bits: ``popcli.load(path, mode="packed")``.

In the signed-constant family (signed_constant and scaled_signed_constant weights, biprop's
+-alpha, the signed supermask over signed-constant weights) every kept weight of an output row is
+-c, and stays so when batch norm is folded into the row (c * gamma / sigma). A row is then one
keep bit and one sign bit per weight (each row padded to whole bytes) plus a float32 ``scale``
(|c|) and ``shift`` (the folded bias):

    y[b, n] = scale[n] * (sum of kept x with sign + - sum of kept x with sign -) + shift[n]

``PackedLinear`` computes that with the C kernel (``kernels/packed.c``: AVX2 lane masks or the
portable C path, the same bits either way) for small batches, and unpacks ``+-scale`` into a
float weight for ``F.linear`` when the batch is large enough that a dense matmul wins (the weight
lives only for that call). ``PackedConv2d`` always unpacks (a convolution is many columns at
once). The direct kernel sums in another order than torch: logits agree with the dense layer to
float32 rounding (relative 1e-5 of their scale, tests), the unpacked path bit for bit.

``pack_model(model)`` replaces every plain Linear/Conv2d whose rows have that form; others (kept
dense layers, float inits) stay as they are. ``resident_bytes(model)`` counts the bytes its
tensors hold. Inference only: the packed layers hold no parameters. Nothing here reads files.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import kernels
from ..errors import ModelError

ISAS = {"generic": 0, "avx2": 2, "avx512": 3}  # packed.c path codes; the widest the CPU runs is taken
DIRECT_MAX_BATCH = 8  # measured (benchmarks/packed.py): above this, unpack + dense matmul is faster
CHUNK_FLOATS = 1 << 18  # unpack a Linear weight 1 MiB at a time for the dense matmul


def _isa_code(isa: str | None) -> int:
    """The kernel path: ``isa`` ("auto", "avx512", "avx2", "generic"), where "auto" (None) follows
    ``$POPCLI_KERNEL_ISA`` and else takes AVX2 (the fastest measured) where the CPU has it; a path wider than the CPU's falls
    back to the widest it runs (packed.c picks)."""
    if isa is None:
        isa = os.environ.get("POPCLI_KERNEL_ISA") or "auto"
    if isa == "auto":  # AVX2: the AVX-512 mask path measured 1.3-2.7x slower on Zen 4 (kmov per byte)
        return ISAS["avx2"]
    if isa not in ISAS:
        raise ModelError(f"kernel isa {isa!r}: use auto, avx512, avx2 or generic")
    return ISAS[isa]


def kernel_isa(isa: str | None = None) -> str:
    """The path a packed layer's kernel call takes now: "avx512", "avx2", "generic", or "torch" (no C kernels)."""
    lib = kernels.library()
    if lib is None:
        return "torch"
    code = min(_isa_code(isa), lib.popcli_packed_isa())
    return "generic" if code < ISAS["avx2"] else ("avx2" if code < ISAS["avx512"] else "avx512")


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _offset(t: torch.Tensor, nbytes: int) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr() + nbytes)


def pack_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(keep, sign, scale) of a [N, K] weight whose nonzero entries in each row are +-one value
    (uint8 [N, ceil(K/8)] LSB first, float32 [N]); None when some row has two magnitudes."""
    w = weight.detach().to("cpu", torch.float32).reshape(weight.shape[0], -1)
    magnitude = w.abs()
    kept = w != 0
    scale = magnitude.amax(dim=1)
    if not bool(((magnitude == scale[:, None]) | ~kept).all()):
        return None
    pad = (-w.shape[1]) % 8
    bits = np.pad(kept.numpy(), ((0, 0), (0, pad)))
    negative = np.pad((w < 0).numpy(), ((0, 0), (0, pad)))
    keep = torch.from_numpy(np.packbits(bits, axis=1, bitorder="little"))
    sign = torch.from_numpy(np.packbits(negative, axis=1, bitorder="little"))
    return keep, sign, scale.contiguous()


class _Packed(nn.Module):
    """Shared state: keep/sign bits, scale, shift (buffers) and the kernel path (``isa``)."""

    def _init_bits(self, packed: tuple, shift: torch.Tensor | None, k_in: int) -> None:
        keep, sign, scale = packed
        self.register_buffer("keep", keep)
        self.register_buffer("sign", sign)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", torch.zeros(len(scale)) if shift is None else shift.detach().float().clone())
        self.k_in = k_in
        self.isa: str | None = None  # None: auto ($POPCLI_KERNEL_ISA, else the best path)

    def unpacked_weight(self, r0: int = 0, r1: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows r0..r1 of the [N, K] float32 weight: +-scale where kept, 0 elsewhere (the dense
        weight, bit for bit); written into ``out`` (contiguous, at least that many elements) if given."""
        n, kbytes = self.keep.shape
        r1 = n if r1 is None else r1
        lib = kernels.library()
        if lib is None or self.keep.device.type != "cpu":
            shifts = torch.arange(8, device=self.keep.device, dtype=torch.uint8)
            kept = ((self.keep[r0:r1, :, None] >> shifts) & 1).reshape(r1 - r0, -1)[:, :self.k_in].bool()
            negative = ((self.sign[r0:r1, :, None] >> shifts) & 1).reshape(r1 - r0, -1)[:, :self.k_in].bool()
            scale = self.scale[r0:r1, None]
            return torch.where(kept, torch.where(negative, -scale, scale), torch.zeros((), device=scale.device))
        out = torch.empty((r1 - r0) * self.k_in) if out is None else out
        out = out.reshape(-1)[:(r1 - r0) * self.k_in].view(r1 - r0, self.k_in)
        lib.popcli_packed_unpack(_offset(self.keep, r0 * kbytes), _offset(self.sign, r0 * kbytes),
                                 _offset(self.scale, r0 * 4), r1 - r0, kbytes, self.k_in, _ptr(out),
                                 kernels.threads(), _isa_code(self.isa))
        return out

    def masked_weights(self) -> int:
        return self.keep.shape[0] * self.k_in


class PackedLinear(_Packed):
    """nn.Linear from its bits (module docstring); ``from_linear(linear)`` or None when not packable."""

    def __init__(self, packed: tuple, shift: torch.Tensor | None, in_features: int) -> None:
        super().__init__()
        self._init_bits(packed, shift, in_features)
        self.in_features, self.out_features = in_features, len(packed[2])
        self._call: tuple | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "PackedLinear | None":
        packed = pack_rows(linear.weight)
        return None if packed is None else cls(packed, linear.bias, linear.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if (rows.shape[0] > DIRECT_MAX_BATCH or x.dtype != torch.float32 or x.device.type != "cpu"
                or (x.requires_grad and torch.is_grad_enabled())):
            return self._unpacked_forward(x)
        call = self._direct_call()
        if call is None:
            return self._unpacked_forward(x)
        fn, args, kbytes, isa = call
        if kbytes * 8 != self.in_features:
            rows = F.pad(rows, (0, kbytes * 8 - self.in_features))
        elif not rows.is_contiguous():
            rows = rows.contiguous()
        y = torch.empty(rows.shape[0], self.out_features)
        fn(*args, rows.data_ptr(), rows.shape[0], y.data_ptr(), torch.get_num_threads(), isa)
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], self.out_features)

    def _direct_call(self):
        """(kernel, its leading arguments, bytes per row, isa code), built once per placement of the
        buffers (``_apply``, behind ``.to()``, and ``set_isa`` drop it; ``$POPCLI_KERNEL_ISA`` is read
        then): a ctypes call with prepared arguments costs ~2 us instead of ~10. None without C
        kernels or off the CPU."""
        if self._call is None:
            lib = kernels.library()
            if lib is None or self.keep.device.type != "cpu":
                return None
            n, kbytes = self.keep.shape
            pointers = (t.data_ptr() for t in (self.keep, self.sign, self.scale, self.shift))
            self._call = (lib.popcli_packed_linear, (*map(ctypes.c_void_p, pointers), n, kbytes), kbytes,
                          _isa_code(self.isa), self.keep)  # holding the buffer keeps its pointer valid
        return self._call[:4]

    def _apply(self, fn, recurse=True):
        self._call = None
        return super()._apply(fn, recurse)

    def _unpacked_forward(self, x: torch.Tensor) -> torch.Tensor:
        """F.linear over the unpacked weight, CHUNK_FLOATS of it at a time: the chunk stays in the
        cache and the transient weight is small (a whole 4096x4096 one costs more to page in than the matmul)."""
        n = self.out_features
        if kernels.library() is None or x.device.type != "cpu" or x.dtype != torch.float32 or n * self.k_in <= CHUNK_FLOATS:
            return F.linear(x, self.unpacked_weight().to(x), self.shift.to(x))
        rows = x.reshape(-1, self.in_features)
        step = max(8, CHUNK_FLOATS // self.k_in // 8 * 8)
        buffer = torch.empty(step * self.k_in)
        y = torch.empty(rows.shape[0], n)
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            torch.addmm(self.shift[r0:r1], rows, self.unpacked_weight(r0, r1, buffer).t(), out=y[:, r0:r1])
        return y.reshape(*x.shape[:-1], n)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits=2"


class PackedConv2d(_Packed):
    """nn.Conv2d from its bits: unpacked into the float weight for each call (module docstring)."""

    def __init__(self, packed: tuple, shift: torch.Tensor | None, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight_shape = tuple(conv.weight.shape)
        self._init_bits(packed, shift, int(np.prod(self.weight_shape[1:])))
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "PackedConv2d | None":
        if conv.padding_mode != "zeros":
            return None
        packed = pack_rows(conv.weight)
        return None if packed is None else cls(packed, conv.bias, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.unpacked_weight().reshape(self.weight_shape).to(x)
        return F.conv2d(x, weight, self.shift.to(x), self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bits=2")


def _packed(module: nn.Module) -> nn.Module | None:
    if type(module) is nn.Linear:
        return PackedLinear.from_linear(module)
    if type(module) is nn.Conv2d:
        return PackedConv2d.from_conv(module)
    return None


def pack_model(model: nn.Module) -> tuple[nn.Module, int]:
    """Every plain Linear/Conv2d of ``model`` whose rows are +-c replaced by its packed layer, in
    place (a root that is itself such a layer is returned new); (model, how many were packed)."""
    root = _packed(model)
    if root is not None:
        return root, 1
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _packed(child)
            if new is not None:
                setattr(parent, name, new.train(child.training))
                count += 1
    return model, count


def set_isa(model: nn.Module, isa: str | None) -> nn.Module:
    """Force the kernel path of every packed layer ("avx512", "avx2", "generic"; None: auto); returns the model."""
    _isa_code(isa)  # checked once, here
    for module in model.modules():
        if isinstance(module, _Packed):
            module.isa = isa
            if isinstance(module, PackedLinear):
                module._call = None
    return model


def resident_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (each storage counted once)."""
    seen: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def packed_weights(model: nn.Module) -> int:
    """How many weights the packed layers of ``model`` describe (for bits per weight)."""
    return sum(m.masked_weights() for m in model.modules() if isinstance(m, _Packed))
