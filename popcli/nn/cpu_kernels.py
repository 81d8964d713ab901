"""The fused CPU kernels of ``cpu_kernels.c``: built once per machine with the system C compiler,
loaded with ctypes, and optional.

``load()`` returns the kernels or None. None (no compiler, a failed build, a non-CPU tensor, or
``POPCLI_CPU_KERNELS=0``) means callers use the plain torch/numpy path, which computes the
same bits, only slower. The build is cached under ``$XDG_CACHE_HOME/popcli/kernels`` (or
``~/.cache``) keyed by the source's hash, written atomically so concurrent processes (torchrun
ranks, test workers) can race safely. ``status()`` says which path is in use and why.
No Python headers or torch headers are needed: the kernels see raw float32 pointers.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from importlib.resources import files
from pathlib import Path

import torch

_FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC", "-ffp-contract=off", "-fno-strict-aliasing")
_OPENMP = ("-fopenmp",)  # tried first; a compiler without OpenMP builds the same kernels single-threaded
_P, _N, _U32, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32, ctypes.c_int
_SIGNATURES = {
    "popcli_count_gather": ([_P, _N, _U32, _U32, _P, _N, ctypes.POINTER(_N), _INT], _N),
    "popcli_masked_weight": ([_P, _P, _P, _N, _U32, _INT], None),
    "popcli_masked_weight_ties": ([_P, _P, _P, _N, _U32, _N], None),
    "popcli_masked_weight_gather": ([_P, _P, _P, _N, _U32, _U32, _P, _N, ctypes.POINTER(_N), _INT], _N),
    "popcli_score_grad": ([_P, _P, _P, _P, _N, _INT], None),
}

_lock = threading.Lock()
_loaded: tuple[ctypes.CDLL | None, str] | None = None  # (library, why) once tried


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "popcli" / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(source: bytes, compiler: str, flags: tuple[str, ...]) -> Path:
    """Compile ``source`` into the cache (once per source + compiler + flags); the .so path."""
    key = hashlib.sha256(source + compiler.encode() + " ".join(flags).encode()).hexdigest()[:16]
    target = _cache_dir() / f"popcli_cpu_{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, lib = Path(tmp) / "kernels.c", Path(tmp) / "kernels.so"
        src.write_bytes(source)
        subprocess.run([compiler, *flags, "-o", str(lib), str(src)], check=True, capture_output=True, timeout=120)
        os.replace(lib, target)  # atomic: a concurrent builder's identical file may win, either is fine
    return target


def _compile(compiler: str) -> tuple[Path, str]:
    """(library path, how it was built): with OpenMP when the compiler has it, else without."""
    source = files("popcli.nn").joinpath("cpu_kernels.c").read_bytes()
    try:
        return _build(source, compiler, _FLAGS + _OPENMP), f"compiled with {compiler} (OpenMP)"
    except subprocess.SubprocessError:
        return _build(source, compiler, _FLAGS), f"compiled with {compiler} (no OpenMP: one thread)"


def _try_load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("POPCLI_CPU_KERNELS", "1") == "0":
        return None, "disabled by POPCLI_CPU_KERNELS=0"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (set CC); using the torch path"
    try:
        path, how = _compile(compiler)
        lib = ctypes.CDLL(str(path))
        for name, (argtypes, restype) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, restype
    except (OSError, subprocess.SubprocessError, AttributeError) as err:
        return None, f"building the CPU kernels failed ({err.__class__.__name__}); using the torch path"
    return lib, how


def load() -> ctypes.CDLL | None:
    """The kernel library, or None when unavailable (tried once per process)."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _try_load()
    return _loaded[0]


def status() -> str:
    """One line: whether the fused CPU kernels are in use, and why not if they are not."""
    load()
    assert _loaded is not None
    return ("fused CPU kernels: " if _loaded[0] is not None else "fused CPU kernels off: ") + _loaded[1]


def usable(*tensors: torch.Tensor) -> bool:
    """True when the kernels are loaded and every tensor is a contiguous float32 CPU tensor."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors) \
        and load() is not None


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _bits(value: float) -> int:
    """The float32 bit pattern of |value| (the kernels compare |s| as integers)."""
    return struct.unpack("<I", struct.pack("<f", value))[0] & 0x7FFFFFFF


def count_gather(scores: torch.Tensor, lo: float, hi: float, cap: int) -> tuple[int, int, torch.Tensor]:
    """(#|s| > hi, #lo <= |s| <= hi, those |s| values float32 [min(inside, cap)]) in one pass; the
    inside count is reported as > cap when they did not all fit."""
    out = torch.empty(max(cap, 1), dtype=torch.int32)
    above = _N()
    inside = load().popcli_count_gather(_ptr(scores), scores.numel(), _bits(lo), _bits(hi), _ptr(out), cap,
                                        ctypes.byref(above), torch.get_num_threads())
    return above.value, inside, out[: min(inside, cap)].view(torch.float32)


def masked_weight(scores: torch.Tensor, weight: torch.Tensor, threshold: float, ties: int | None = None) -> torch.Tensor:
    """``weight * (|scores| >= threshold)``; with ``ties``, entries equal to the threshold are kept
    only for the first ``ties`` of them by flat index."""
    out = torch.empty_like(weight)
    if ties is None:
        load().popcli_masked_weight(_ptr(scores), _ptr(weight), _ptr(out), weight.numel(), _bits(threshold),
                                    torch.get_num_threads())
    else:
        load().popcli_masked_weight_ties(_ptr(scores), _ptr(weight), _ptr(out), weight.numel(), _bits(threshold), ties)
    return out


def masked_weight_gather(scores: torch.Tensor, weight: torch.Tensor, lo: float, hi: float,
                         cap: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """(out, #|s| > hi, flat indices of lo <= |s| <= hi in increasing order, or None when more
    than ``cap``) in one pass, where out = weight * (|s| > hi): the entries inside the bracket
    are still 0 and the caller sets the kept ones to the weight once it knows the threshold."""
    out, idx, above = torch.empty_like(weight), torch.empty(max(cap, 1), dtype=torch.int64), _N()
    inside = load().popcli_masked_weight_gather(_ptr(scores), _ptr(weight), _ptr(out), weight.numel(), _bits(lo),
                                                _bits(hi), _ptr(idx), cap, ctypes.byref(above), torch.get_num_threads())
    return out, above.value, idx[:inside] if inside <= cap else None


def score_grad(grad: torch.Tensor, weight: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``(grad * weight) * sign(scores)``: the straight-through gradient of the scores."""
    out = torch.empty_like(grad)
    load().popcli_score_grad(_ptr(grad), _ptr(weight), _ptr(scores), _ptr(out), grad.numel(), torch.get_num_threads())
    return out
