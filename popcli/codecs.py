"""Mask codecs: the masks of all masked layers <-> one byte stream. Specified in docs/FORMAT.md.

The layers' flat masks are concatenated in layer order into one bit sequence (bit i: weight i
kept) and coded as a whole, so that small layers cost no per-layer overhead:

- ``packbits``: 8 bits per byte, bit i in byte i // 8 at position i % 8 (least significant
  first). Exactly ceil(n / 8) bytes whatever the density.
- ``rans``: a static binary range-ANS coder (Duda's rANS: 16-bit probabilities, 32-bit states,
  16-bit words). Each layer has its own probability of a kept weight, derived from its kept
  count, so the stream needs no parameters. ``lanes`` interleaved states share one word stream
  so that numpy codes a row of lanes per step. It approaches the entropy H(k) bits per weight;
  packbits wins near k = 0.5.

``encode(bits, sizes, kept, codec)`` -> uint8 bytes; ``decode(data, sizes, kept, codec)`` -> the
bits. A malformed stream raises ``CodecError``, never a mask of the wrong length.
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np
import torch

from . import kernels
from .errors import ArtifactError

CODECS = ("packbits", "rans")
_M = 1 << 16  # probabilities are integers out of 2^16
_LOW = 1 << 16  # rANS state lives in [2^16, 2^32)
_SYMBOLS_PER_LANE = 32768
_MAX_LANES = 4096
_U16, _MASK16 = np.uint64(16), np.uint64(0xFFFF)


class CodecError(ArtifactError):
    """A mask stream that does not decode to what its metadata says."""


def lanes_for(n: int) -> int:
    """Interleaved rANS states for n symbols: one per 32768 symbols, 1..4096. A lane costs 4
    bytes of final state; fewer lanes would mean more (slow, numpy-sized) decoding steps."""
    return max(1, min(_MAX_LANES, n // _SYMBOLS_PER_LANE))


def frequency_of_one(kept: int, n: int) -> int:
    """A layer's probability of a kept weight as an integer out of 2^16, in [1, 2^16 - 1]
    (1 for an empty layer, which codes no symbol)."""
    if n == 0:
        return 1
    return min(_M - 1, max(1, (kept * _M + n // 2) // n))


class _Frequencies:
    """f1 (out of 2^16) of each symbol position, per layer, for contiguous ranges of positions."""

    def __init__(self, sizes: Sequence[int], kept: Sequence[int]):
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
        self.f1 = [frequency_of_one(k, n) for k, n in zip(kept, sizes)]

    def of(self, base: int, count: int) -> np.ndarray:
        """f1 of positions base..base+count-1 (uint64; a 0-d array when one layer holds them all)."""
        first = bisect.bisect_right(self.starts, base) - 1
        last = bisect.bisect_right(self.starts, base + count - 1) - 1
        if first == last:
            return np.uint64(self.f1[first])
        edges = np.clip(np.array(self.starts[first:last + 2]) - base, 0, count)
        return np.repeat(np.array(self.f1[first:last + 1], dtype=np.uint64), np.diff(edges))


# --------------------------------------------------------------------------- rANS


def _rans_encode(bits: np.ndarray, freqs: _Frequencies) -> np.ndarray:
    n = bits.size
    lanes = lanes_for(n)
    x = np.full(lanes, _LOW, dtype=np.uint64)
    emitted: list[np.ndarray] = []  # per encoding step (last symbols first): the renormalizing lanes' words
    for step in range(-(-n // lanes) - 1, -1, -1):
        base = step * lanes  # symbol base + j belongs to lane j
        sym = bits[base:base + lanes]
        active = sym.size
        f1 = freqs.of(base, active)
        freq = np.where(sym, f1, np.uint64(_M) - f1)
        start = np.where(sym, np.uint64(_M) - f1, np.uint64(0))  # symbol 0: [0, f0), symbol 1: [f0, 2^16)
        xa = x[:active]
        spill = xa >= (freq << _U16)  # renormalize: emit the low 16 bits
        if spill.any():
            emitted.append((xa[spill] & _MASK16).astype(np.uint16))
            xa[spill] >>= _U16
        x[:active] = ((xa // freq) << _U16) + xa % freq + start
    states = np.empty(2 * lanes, dtype=np.uint16)  # per lane, in decoding order: high 16 bits, low 16 bits
    states[0::2], states[1::2] = (x >> _U16).astype(np.uint16), (x & _MASK16).astype(np.uint16)
    # the decoder runs the steps forwards and reads, per step, the same lanes in increasing order
    return np.concatenate([states, *emitted[::-1]]).astype("<u2").view(np.uint8)


def _rans_decode(data: np.ndarray, n: int, freqs: _Frequencies) -> np.ndarray:
    lanes = lanes_for(n)
    if data.size % 2 or data.size < 4 * lanes:
        raise CodecError(f"rans stream of {data.size} bytes is too short or odd for {lanes} lanes")
    words = data.view("<u2").astype(np.uint64)
    x = (words[0:2 * lanes:2] << _U16) | words[1:2 * lanes:2]
    pos = 2 * lanes
    out = np.empty(n, dtype=np.bool_)
    low, m = np.uint64(_LOW), np.uint64(_M)
    for step in range(-(-n // lanes)):
        base = step * lanes
        active = min(lanes, n - base)
        f0 = m - freqs.of(base, active)
        xa = x[:active]
        slot = xa & _MASK16
        sym = slot >= f0
        xa = np.where(sym, m - f0, f0) * (xa >> _U16) + slot - np.where(sym, f0, np.uint64(0))
        refill = np.flatnonzero(xa < low)
        if refill.size:
            if pos + refill.size > words.size:
                raise CodecError("rans stream ended early: the mask data is truncated or corrupt")
            xa[refill] = (xa[refill] << _U16) | words[pos:pos + refill.size]
            pos += refill.size
        x[:active] = xa
        out[base:base + active] = sym
    if pos != words.size or np.any(x != low):
        raise CodecError("rans stream did not end where it should: the mask data is corrupt")
    return out


def _rans_decode_c(lib, data: np.ndarray, n: int, freqs: _Frequencies) -> tuple[np.ndarray, list[int]]:
    """``_rans_decode`` by popcli/kernels/rans.c (the same arithmetic, one symbol at a time), which
    also counts each layer's kept weights."""
    if data.size % 2:
        raise CodecError(f"rans stream of {data.size} bytes is odd")
    words = np.ascontiguousarray(data).view("<u2")
    starts = np.asarray(freqs.starts, dtype=np.int64)
    f1 = np.asarray(freqs.f1, dtype=np.uint32)
    ones = np.zeros(f1.size, dtype=np.int64)
    # torch's allocator: numpy asks for huge pages on large arrays, whose first touch can stall for ms
    out = torch.empty(n, dtype=torch.uint8).numpy()
    status = lib.popcli_rans_decode(words.ctypes.data, words.size, n, lanes_for(n), starts.ctypes.data, f1.ctypes.data,
                                    f1.size, out.ctypes.data, ones.ctypes.data)
    if status == -1:
        raise CodecError("rans stream ended early: the mask data is truncated or corrupt")
    if status != 0:
        raise CodecError("rans stream did not end where it should: the mask data is corrupt")
    return out.view(np.bool_), ones.tolist()


# --------------------------------------------------------------------------- dispatch


def encode(bits: np.ndarray, sizes: Sequence[int], codec: str) -> np.ndarray:
    """uint8 bytes of the concatenated layer masks ``bits`` (bool [sum(sizes)])."""
    bits = np.ascontiguousarray(bits, dtype=np.bool_).reshape(-1)
    if bits.size != sum(sizes):
        raise ValueError(f"{bits.size} bits for layers of {sum(sizes)} weights")
    if codec == "packbits":
        return np.packbits(bits, bitorder="little")
    if codec == "rans":
        starts = np.concatenate([[0], np.cumsum(sizes)])
        kept = [int(np.count_nonzero(bits[a:b])) for a, b in zip(starts[:-1], starts[1:])]
        return _rans_encode(bits, _Frequencies(sizes, kept))
    raise ArtifactError(f"unknown mask codec {codec!r}; choose auto or one of: {', '.join(CODECS)}")


def decode(data: np.ndarray, sizes: Sequence[int], kept: Sequence[int], codec: str) -> tuple[np.ndarray, list[int]]:
    """(the concatenated masks, bool [sum(sizes)]; the number of kept weights decoded per layer).
    CodecError unless ``data`` decodes exactly."""
    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    n = int(sum(sizes))
    if codec == "packbits":
        if data.size != (n + 7) // 8:
            raise CodecError(f"packbits masks hold {data.size} bytes, expected {(n + 7) // 8} for {n} weights")
        if n % 8 and data[-1] >> (n % 8):
            raise CodecError(f"packbits masks: the {8 - n % 8} padding bits of the last byte are not zero")
        bits = np.unpackbits(data, count=n, bitorder="little").view(np.bool_)
    elif codec == "rans":
        freqs = _Frequencies(sizes, kept)
        lib = kernels.library()
        if lib is not None:
            return _rans_decode_c(lib, data, n, freqs)
        bits = _rans_decode(data, n, freqs)
    else:
        raise CodecError(f"unknown mask codec {codec!r} (this popcli knows {', '.join(CODECS)}); upgrade popcli")
    return bits, [int(np.count_nonzero(part)) for part in np.split(bits, np.cumsum(sizes)[:-1])] if sizes else []


def encode_best(bits: np.ndarray, sizes: Sequence[int], codec: str = "auto") -> tuple[str, np.ndarray]:
    """(codec, bytes); ``auto`` codes with every codec and keeps the smallest."""
    if codec != "auto":
        return codec, encode(bits, sizes, codec)
    return min(((name, encode(bits, sizes, name)) for name in CODECS), key=lambda item: item[1].size)


def entropy_bits(kept: int, n: int) -> float:
    """n * H(kept / n): what an ideal coder of independent bits needs, in bits."""
    p = kept / n
    return 0.0 if p in (0.0, 1.0) else -n * (p * math.log2(p) + (1 - p) * math.log2(1 - p))


# --------------------------------------------------------------------------- small counts (IteRand draws)
#
# Non-negative integer counts (the draw number of each kept weight) as binary symbols, coded by
# the mask codecs above: per layer, segment A holds one bit per count (1: the count is > 0) and
# segment B, for each count c > 0 in order, c - 1 ones then a zero (unary). Segments run A_1, B_1,
# A_2, B_2, ..., empty ones left out; each is one "layer" of ``encode`` (its own probability), so a
# layer's (n, redrawn, total) fix every segment's size and ones: A: n symbols, redrawn ones; B:
# total symbols (total = sum of counts), total - redrawn ones. Unary with a learnt probability is
# the ideal code of a geometric count. docs/FORMAT.md ("IteRand draws").


def count_segments(n: Sequence[int], redrawn: Sequence[int], total: Sequence[int]) -> tuple[list[int], list[int]]:
    """(sizes, ones) of the non-empty segments of layers with ``n`` counts, ``redrawn`` of them > 0
    and ``total`` their sum."""
    sizes, ones = [], []
    for size, r, t in zip(n, redrawn, total):
        for seg_size, seg_ones in ((size, r), (t, t - r)):
            if seg_size:
                sizes.append(int(seg_size))
                ones.append(int(seg_ones))
    return sizes, ones


def count_bits(counts: np.ndarray) -> np.ndarray:
    """Segments A then B of one layer's counts (int [n] >= 0), as bool."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    positive = counts[counts > 0]
    unary = np.ones(int(positive.sum()), dtype=np.bool_)
    unary[np.cumsum(positive) - 1] = False  # each count's last symbol is its zero
    return np.concatenate([counts > 0, unary])


def encode_counts(counts: Sequence[np.ndarray], codec: str = "auto") -> tuple[str, np.ndarray, list[int], list[int]]:
    """(codec, bytes, redrawn per layer, total per layer) of the layers' ``counts``."""
    redrawn = [int(np.count_nonzero(c)) for c in counts]
    total = [int(np.asarray(c, dtype=np.int64).sum()) for c in counts]
    bits = np.concatenate([count_bits(c) for c in counts]) if counts else np.zeros(0, dtype=np.bool_)
    sizes, _ = count_segments([np.asarray(c).size for c in counts], redrawn, total)
    chosen, data = encode_best(bits, sizes, codec)
    return chosen, data, redrawn, total


def decode_counts(data: np.ndarray, n: Sequence[int], redrawn: Sequence[int], total: Sequence[int],
                  codec: str) -> list[np.ndarray]:
    """The layers' counts (int64 [n_l] each) from ``encode_counts``'s bytes; CodecError unless the
    stream decodes to exactly the segments ``n``, ``redrawn`` and ``total`` describe."""
    if any(r > k or r > t or (t > 0) != (r > 0) for k, r, t in zip(n, redrawn, total)):
        raise CodecError("draw counts: a layer's redrawn count exceeds its kept or total count")
    sizes, ones = count_segments(n, redrawn, total)
    bits, found = decode(data, sizes, ones, codec)
    if found != ones:
        raise CodecError("draw counts: a segment decodes to other counts than the metadata's (corrupt stream)")
    out, pos = [], 0
    for size, r, t in zip(n, redrawn, total):
        flags, pos = bits[pos:pos + size], pos + size
        unary, pos = bits[pos:pos + t], pos + t
        ends = np.flatnonzero(~unary)  # one zero per positive count (checked above: t - r ones)
        if r and ends[-1] != t - 1:
            raise CodecError("draw counts: a unary count runs past its segment (corrupt stream)")
        counts = np.zeros(size, dtype=np.int64)
        counts[flags] = np.diff(np.concatenate([[-1], ends]))
        out.append(counts)
    return out
