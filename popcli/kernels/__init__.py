"""popcli's C kernels: built once per machine with the system C compiler, loaded with ctypes,
and optional.

Sources (plain C99 with GCC/Clang vector extensions and OpenMP, no Python or torch headers):
``train.c`` (the fused edge-popup training passes), ``rng.c`` (the portable weight generator),
``rans.c`` (the mask decoder) and ``packed.c`` (layers run from keep and sign bits, whose own
tolerance its header states). The first three compute exactly the bits of the numpy/torch code they
speed up (tests check both paths), so ``library()`` returning None only costs time: no C
compiler, a failed build, or ``POPCLI_CPU_KERNELS=0``. ``status()`` says which and why.

The build is cached under ``$XDG_CACHE_HOME/popcli/kernels`` (or ``~/.cache``) keyed by a hash of
the sources, compiler and flags, and written atomically, so concurrent processes (torchrun ranks,
test workers) may race safely. This module imports nothing from popcli.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from importlib.resources import files
from pathlib import Path

SOURCES = ("train.c", "rng.c", "rans.c", "packed.c")
_FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno", "-fno-strict-aliasing")
_OPENMP = ("-fopenmp",)  # tried first; without OpenMP the same kernels run on one thread
_P, _N, _U32, _U64, _INT, _F32 = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int,
                                  ctypes.c_float)
SIGNATURES = {
    "popcli_count_gather": ([_P, _N, _U32, _U32, _P, _N, ctypes.POINTER(_N), _INT], _N),
    "popcli_masked_weight": ([_P, _P, _P, _N, _U32, _INT], None),
    "popcli_masked_weight_ties": ([_P, _P, _P, _N, _U32, _N], None),
    "popcli_masked_weight_gather": ([_P, _P, _P, _N, _U32, _U32, _P, _N, ctypes.POINTER(_N), _INT], _N),
    "popcli_score_grad": ([_P, _P, _P, _P, _N, _INT], None),
    "popcli_generate_weights": ([_U64, _U64, _N, _INT, _F32, _P, _INT], None),
    "popcli_rans_decode": ([_P, _N, _N, _N, _P, _P, _N, _P, _P], _INT),
    "popcli_packed_isa": ([], _INT),
    "popcli_packed_linear": ([_P, _P, _P, _P, _N, _N, _P, _N, _P, _INT, _INT], None),
    "popcli_packed_unpack": ([_P, _P, _P, _N, _N, _N, _P, _INT, _INT], None),
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


def _build(compiler: str, flags: tuple[str, ...]) -> Path:
    """Compile the sources into the cache (once per sources + compiler + flags); the library path."""
    sources = {name: files(__name__).joinpath(name).read_bytes() for name in SOURCES}
    key = hashlib.sha256(b"".join(sources.values()) + compiler.encode() + " ".join(flags).encode()).hexdigest()[:16]
    target = _cache_dir() / f"popcli_kernels_{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        for name, text in sources.items():
            (Path(tmp) / name).write_bytes(text)
        lib = Path(tmp) / "kernels.so"
        subprocess.run([compiler, *flags, "-o", str(lib), *(str(Path(tmp) / n) for n in SOURCES)], check=True,
                       capture_output=True, timeout=300)
        os.replace(lib, target)  # atomic: a concurrent builder's identical file may win, either is fine
    return target


def _try_load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("POPCLI_CPU_KERNELS", "1") == "0":
        return None, "disabled by POPCLI_CPU_KERNELS=0"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (set CC); using the numpy/torch path"
    try:
        try:
            path, how = _build(compiler, _FLAGS + _OPENMP), f"compiled with {compiler} (OpenMP)"
        except subprocess.SubprocessError:
            path, how = _build(compiler, _FLAGS), f"compiled with {compiler} (no OpenMP: one thread)"
        lib = ctypes.CDLL(str(path))
        for name, (argtypes, restype) in SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, restype
    except (OSError, subprocess.SubprocessError, AttributeError) as err:
        return None, f"building them failed ({err.__class__.__name__}); using the numpy/torch path"
    return lib, how


def library() -> ctypes.CDLL | None:
    """The kernel library, or None when unavailable (tried once per process)."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _try_load()
    return _loaded[0]


def status() -> str:
    """One line: whether the C kernels are in use, and why not if they are not."""
    library()
    assert _loaded is not None
    return ("C kernels: " if _loaded[0] is not None else "C kernels off: ") + _loaded[1]


def threads() -> int:
    """Threads for a kernel call: torch's intra-op count (1 under torchrun's default)."""
    import torch

    return max(1, torch.get_num_threads())
