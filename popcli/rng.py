"""The one owner of randomness in popcli.

Two kinds of randomness live here:

1. The *portable weight generator* (``generate_weight``): the frozen random weights of every
   masked layer. An artifact stores only a seed, so these floats must come out bit for bit the
   same on any machine, thread count, CPU instruction set and library version. The generator
   is specified in docs/FORMAT.md ("The weight generator"):

   - bits: Philox4x64-10 (Salmon et al. 2011), key = (seed, first 8 bytes of SHA-256(layer
     name) read little-endian), block j computed at counter j + 1 (numpy's ``Philox`` with
     counter 0 increments before its first block), words emitted v0, v1, v2, v3. numpy
     guarantees this integer stream across versions; tests pin it against a pure-Python
     reference and golden values.
   - integer -> float: only IEEE-754 exactly rounded operations (+ - * / sqrt, frexp, float64
     -> float32 rounding). No libm log/exp/cos, whose last bit differs between platforms: the
     normal inverse CDF (Wichura's AS241) uses a logarithm written here from those operations.
   - numpy here is the reference; ``popcli/kernels/rng.c`` computes the same bits faster (used
     when the C kernels are available; tests check both against golden values).

2. *Training randomness* (score init, data order, augmentation): ordinary ``torch.Generator``
   objects derived from the seed and a stream name by ``torch_generator``. These need to be
   reproducible on one machine (for resume), not across machines, and are never stored.

Nothing here touches the global RNGs of torch, numpy or random.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
import torch

from . import kernels
from .errors import PopcliError, shown

GENERATOR_NAME = "popcli-philox4x64-10"
GENERATOR_VERSION = 1

INITS = (
    "kaiming_normal",
    "signed_constant",
    "scaled_kaiming_normal",
    "scaled_signed_constant",
    "kaiming_uniform",
    "xavier_normal",
    "elus_signed_constant",
)

MAX_SEED = 2**63 - 1
_CHUNK = 1 << 16  # elements per float transform step: keeps the float32 temporaries in cache


# --------------------------------------------------------------------------- keys and streams


def _name_word(name: str) -> int:
    """First 8 bytes of SHA-256(name as UTF-8), little-endian: the second Philox key word."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise PopcliError(f"seed must be an integer in [0, 2**63-1], got {shown(seed)}")
    return seed


def philox_key(seed: int, name: str) -> tuple[int, int]:
    """The Philox4x64 key (k0, k1) of one layer's stream."""
    return check_seed(seed), _name_word(name)


def raw_words(seed: int, name: str, n_words: int) -> np.ndarray:
    """The first ``n_words`` 64-bit outputs of the layer's Philox stream, shape [n_words] uint64."""
    k0, k1 = philox_key(seed, name)
    bits = np.random.Philox(key=np.array([k0, k1], dtype=np.uint64), counter=0)
    return bits.random_raw(n_words).astype(np.uint64, copy=False)


def uint32_stream(seed: int, name: str, n: int) -> np.ndarray:
    """``n`` uint32 values: each 64-bit word split into its low half, then its high half."""
    words = raw_words(seed, name, (n + 1) // 2)
    return words.astype("<u8", copy=False).view("<u4")[:n]


def derive_seed(seed: int, *stream: str | int) -> int:
    """A 63-bit seed for one named stream (e.g. ``derive_seed(seed, "data", epoch)``)."""
    text = "/".join([str(check_seed(seed)), *map(str, stream)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def torch_generator(seed: int, *stream: str | int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh torch.Generator for training randomness (not portable across machines)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *stream))
    return gen


# --------------------------------------------------------------------------- exact math


_F32 = np.float32


def _log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive float32 values from exactly rounded float32 operations only.

    x = m * 2**e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(t), t = (m-1)/(m+1), |t| <= 0.1716,
    summed as the odd series 2t(1 + t^2/3 + ... + t^12/13) (truncation < 1e-11 relative), plus
    e * float32(ln 2). Not libm: the same bits everywhere.
    """
    m, e = np.frexp(x)  # exact: m in [0.5, 1)
    small = m < _F32(0.70710677)
    m = np.where(small, m * _F32(2.0), m)
    e = (e - small).astype(np.float32)
    t = (m - _F32(1.0)) / (m + _F32(1.0))
    t2 = t * t
    acc = np.full_like(t, _F32(1.0 / 13.0))
    for k in (11, 9, 7, 5, 3, 1):
        acc = acc * t2 + _F32(1.0 / k)
    return e * _F32(0.6931472) + _F32(2.0) * t * acc


# AS241 PPND7 (Wichura 1988; about 7 significant digits, float32 accuracy). Lowest power first.
_A = tuple(map(_F32, (3.3871327179, 50.434271938, 159.29113202, 59.109374720)))
_B = tuple(map(_F32, (1.0, 17.895169469, 78.757757664, 67.187563600)))
_C = tuple(map(_F32, (1.4234372777, 2.7568153900, 1.3067284816, 0.17023821103)))
_D = tuple(map(_F32, (1.0, 0.73700164250, 0.12021132975)))


def _horner(coeffs: Sequence[np.float32], r: np.ndarray) -> np.ndarray:
    acc = np.full_like(r, coeffs[-1])
    for c in coeffs[-2::-1]:
        acc *= r
        acc += c
    return acc


def normal_from_centered(q: np.ndarray) -> np.ndarray:
    """Standard normal quantile of p = 0.5 + q, float32 q in (-0.5, 0.5) (AS241 PPND7).

    Central region |q| <= 0.425: q * A(r) / B(r), r = 0.180625 - q^2. Tails: r = sqrt(-log(0.5-|q|))
    - 1.6, value C(r) / D(r) with the sign of q. With 23-bit uniforms 0.5-|q| >= 2**-24, so
    sqrt(-log) <= 4.08 and AS241's third region (r > 5) never occurs.
    """
    r = _F32(0.180625) - q * q
    out = q * _horner(_A, r)
    out /= _horner(_B, r)
    tail = np.flatnonzero(np.abs(q) > _F32(0.425))
    if tail.size:
        qt = q[tail]
        rt = np.sqrt(-_log(_F32(0.5) - np.abs(qt))) - _F32(1.6)
        val = _horner(_C, rt) / _horner(_D, rt)
        out[tail] = np.where(qt < 0, -val, val)
    return out


def centered_uniform(u32: np.ndarray) -> np.ndarray:
    """uint32 x -> q = ((x >> 9) - 4194303.5) * 2**-23 in (-0.5, 0.5), float32, every step exact."""
    q = (u32 >> 9).astype(np.float32)
    q -= _F32(4194303.5)
    q *= _F32(2.0**-23)
    return q


# --------------------------------------------------------------------------- weights


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear [out, in] or Conv2d [out, in, kh, kw] weight."""
    if len(shape) < 2:
        raise PopcliError(f"weights need at least 2 dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def weight_scale(init: str, shape: Sequence[int], density: float = 1.0) -> float:
    """The float32 scale of an init: std (normal), constant (signed) or bound (uniform).

    Computed in float64 in this order, then rounded once to float32:
    kaiming_*: sqrt(2 / fan_in); scaled_*: sqrt(2 / (density * fan_in)) (the paper's 1/sqrt(k)
    scaling); kaiming_uniform: sqrt(6 / fan_in); xavier_normal: sqrt(2 / (fan_in + fan_out));
    elus_signed_constant: sqrt(3 / fan_in).
    """
    fan_in, fan_out = fans(shape)
    if init in ("kaiming_normal", "signed_constant"):
        scale = math.sqrt(2.0 / fan_in)
    elif init in ("scaled_kaiming_normal", "scaled_signed_constant"):
        if not 0.0 < density <= 1.0:
            raise PopcliError(f"density must be in (0, 1] for {init}, got {density}")
        scale = math.sqrt(2.0 / (density * fan_in))
    elif init == "kaiming_uniform":
        scale = math.sqrt(6.0 / fan_in)
    elif init == "xavier_normal":
        scale = math.sqrt(2.0 / (fan_in + fan_out))
    elif init == "elus_signed_constant":  # Koster et al.'s ELUS for signed supermasks: He's 2/fan x 1.5
        scale = math.sqrt(3.0 / fan_in)
    else:
        raise PopcliError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
    return float(np.float32(scale))


def _signed(seed: int, name: str, n: int, scale: float) -> np.ndarray:
    """One bit per weight: bit i is bit (i mod 64) of word i // 64; 1 -> +scale, 0 -> -scale."""
    words = raw_words(seed, name, (n + 63) // 64)
    bits = np.unpackbits(words.astype("<u8", copy=False).view(np.uint8), bitorder="little")[:n]
    values = np.array([-scale, scale], dtype=np.float32)
    return values[bits]


def _from_uniform(seed: int, name: str, n: int, scale: float, normal: bool) -> np.ndarray:
    """One uint32 per weight -> centered uniform q -> (normal quantile | 2q) * scale, all float32."""
    u32 = uint32_stream(seed, name, n)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, _CHUNK):
        q = centered_uniform(u32[start:start + _CHUNK])
        z = normal_from_centered(q) if normal else q * _F32(2.0)
        out[start:start + _CHUNK] = z * _F32(scale)  # float32 product, exactly rounded
    return out


def _generate_c(lib, seed: int, name: str, n: int, init: str, scale: float, threads: int) -> torch.Tensor:
    """The same bits from popcli/kernels/rng.c: Philox and the float transform fused, multi-threaded."""
    kind = 2 if init.endswith("signed_constant") else 1 if init.endswith("uniform") else 0  # rng.c's enum
    out = torch.empty(n, dtype=torch.float32)
    lib.popcli_generate_weights(*philox_key(seed, name), n, kind, scale, out.data_ptr(), threads)
    return out


def generate_weight(seed: int, name: str, shape: Sequence[int], init: str, density: float = 1.0, *,
                    threads: int | None = None) -> torch.Tensor:
    """The portable random weight of layer ``name``: float32 CPU tensor of ``shape``.

    ``density`` matters only for the scaled_* inits. Bit-identical on every platform; computed by
    the C kernels when they are available (on ``threads`` threads, default torch's count), else
    by numpy.
    """
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    scale = weight_scale(init, shape, density)
    lib = kernels.library()
    if lib is not None:
        return _generate_c(lib, seed, name, n, init, scale, threads or kernels.threads()).reshape(shape)
    if init.endswith("signed_constant"):
        flat = _signed(seed, name, n, scale)
    else:
        flat = _from_uniform(seed, name, n, scale, normal=not init.endswith("uniform"))
    return torch.from_numpy(flat).reshape(shape)


def generate_tensor(seed: int, name: str, shape: Sequence[int], distribution: str, scale: float) -> torch.Tensor:
    """A portable float32 tensor for a non-weight parameter (a frozen or initial bias, a class
    token, ...) from the stream ``"param:" + name``: ``distribution`` "uniform" gives U(-scale,
    scale) (2q * scale), "normal" N(0, scale^2), by the same float32 transforms as the weights."""
    shape = tuple(int(s) for s in shape)
    if distribution not in ("uniform", "normal"):
        raise ValueError(f"distribution must be 'uniform' or 'normal', got {distribution!r}")
    flat = _from_uniform(seed, "param:" + name, math.prod(shape), float(np.float32(scale)), distribution == "normal")
    return torch.from_numpy(flat).reshape(shape)


def weight_sha256(weight: torch.Tensor) -> str:
    """SHA-256 hex digest of a float32 weight's little-endian bytes in C order."""
    array = weight.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
    return hashlib.sha256(memoryview(array).cast("B")).hexdigest()  # no copy of the bytes


# --------------------------------------------------------------------------- redraws (IteRand)
#
# Iterative randomization (Chijiwa et al. 2021) re-draws pruned weights during a search. Draw j
# of a layer's weights is the whole weight tensor generated as above from the stream named
# ``redraw_name(name, j)``; draw 0 is the layer's own stream, so a weight that was never redrawn
# is today's weight bit for bit. Which pruned weights a round redraws comes from the stream named
# ``redraw_choice_name(name, t)``. docs/FORMAT.md ("IteRand draws") specifies both.

MAX_DRAW = 32767  # draw counters are int16


def redraw_name(name: str, draw: int) -> str:
    """The stream of draw ``draw`` of layer ``name``: the name itself for draw 0, else
    ``name + "#redraw=" + decimal(draw)`` (SHA-256 of it keys Philox as for any layer name)."""
    if not 0 <= draw <= MAX_DRAW:
        raise PopcliError(f"draw {draw} of layer {name!r} is outside [0, {MAX_DRAW}]")
    return name if draw == 0 else f"{name}#redraw={draw}"


def redraw_choice_name(name: str, round_: int) -> str:
    """The stream deciding, in redraw round ``round_`` (1-based), which of layer ``name``'s weights
    are candidates: ``name + "#iterand-round=" + decimal(round_)``."""
    return f"{name}#iterand-round={round_}"


def rate_threshold(rate: float) -> int:
    """floor(rate * 2**32): a weight is a candidate when its uint32 draw is below this (rate 1: all)."""
    if not 0.0 <= rate <= 1.0:
        raise PopcliError(f"redraw rate must be in [0, 1], got {rate}")
    return math.floor(float(rate) * 4294967296.0)  # exact: a float64 times a power of two


def redraw_candidates(seed: int, name: str, round_: int, n: int, rate: float) -> np.ndarray:
    """bool [n]: weight i is a candidate of round ``round_`` when uint32 i of the round's stream
    (``uint32_stream``) is below ``rate_threshold(rate)``: independent Bernoulli(rate) choices."""
    u32 = uint32_stream(seed, redraw_choice_name(name, round_), n)
    return u32.astype(np.uint64) < np.uint64(rate_threshold(rate))


def redrawn_weight(seed: int, name: str, shape: Sequence[int], init: str, density: float,
                   draws: torch.Tensor | np.ndarray | None, *, threads: int | None = None) -> torch.Tensor:
    """The weight whose element i is element i of draw ``draws[i]`` (int, the weight's shape or
    flat; None: draw 0 everywhere, i.e. ``generate_weight``). One full generation per distinct
    draw number present."""
    weight = generate_weight(seed, name, shape, init, density, threads=threads)
    if draws is None:
        return weight
    draws = torch.as_tensor(np.asarray(draws) if isinstance(draws, np.ndarray) else draws).reshape(-1).cpu()
    if draws.numel() != weight.numel():
        raise PopcliError(f"{draws.numel()} draw numbers for layer {name!r} of {weight.numel()} weights")
    flat = weight.reshape(-1)
    for j in torch.unique(draws).tolist():
        if j != 0:
            chosen = draws == j
            flat[chosen] = generate_weight(seed, redraw_name(name, int(j)), shape, init, density,
                                           threads=threads).reshape(-1)[chosen]
    return weight
# --------------------------------------------------------------------------- the subspace projection

FASTFOOD_NAME = "fastfood-v1"
FASTFOOD_STREAMS = ("subspace/fastfood-v1/B", "subspace/fastfood-v1/perm", "subspace/fastfood-v1/G",
                    "subspace/fastfood-v1/S")  # the Philox key words of B, Pi, G, S (docs/FORMAT.md)


def fastfood_parts(seed: int, n_blocks: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The random parts of ``n_blocks`` Fastfood blocks of size ``block`` (a power of two), each
    [n_blocks, block], all drawn on the CPU from the streams ``FASTFOOD_STREAMS`` of ``seed``
    (docs/FORMAT.md, "Subspace"):

    - B (float32 +-1): bit i of the B stream (bit i mod 64 of word i // 64) 1 -> +1, 0 -> -1;
    - perm (int64): row b is the stable argsort of words b*block .. (b+1)*block - 1 of the perm stream;
    - G (float32 N(0, 1)): one uint32 each of the G stream, by the weights' normal transform;
    - S (float64 chi_block, Wilson-Hilferty): g from the S stream as G, c = 2 / (9 * block),
      t = max(0, 1 - c + g * sqrt(c)), S = sqrt(block * t * t * t), in float64 in this order.
    """
    if block < 1 or block & (block - 1) or n_blocks < 1:
        raise ValueError(f"fastfood needs a power-of-two block and at least one block, got {n_blocks} x {block}")
    n = n_blocks * block
    words = raw_words(seed, FASTFOOD_STREAMS[0], (n + 63) // 64)
    bits = np.unpackbits(words.astype("<u8", copy=False).view(np.uint8), bitorder="little")[:n]
    signs = np.array([-1.0, 1.0], dtype=np.float32)[bits].reshape(n_blocks, block)
    keys = raw_words(seed, FASTFOOD_STREAMS[1], n).reshape(n_blocks, block)
    perm = np.argsort(keys, axis=1, kind="stable").astype(np.int64)
    gauss = [normal_from_centered(centered_uniform(uint32_stream(seed, name, n))).reshape(n_blocks, block)
             for name in FASTFOOD_STREAMS[2:]]
    c = 2.0 / (9.0 * block)
    t = np.maximum(0.0, 1.0 - c + gauss[1].astype(np.float64) * math.sqrt(c))
    chi = np.sqrt(block * t * t * t)
    return signs, perm, gauss[0], chi
