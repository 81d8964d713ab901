"""popcli's C kernels: built once per machine with the system C compiler, loaded with ctypes,
and optional.

Sources (plain C99 with GCC/Clang vector extensions and OpenMP, no Python or torch headers):
``train.c`` (the fused edge-popup training passes), ``rng.c`` (the portable weight generator),
``rans.c`` (the mask decoder), ``packed.c`` (layers run from keep and sign bits, whose own tolerance
its header states) and ``isa.c`` (which build this CPU runs). The others compute exactly the
bits of the numpy/torch code they speed up (tests check both paths), so ``library()`` returning None
only costs time: no C compiler, a failed build, or ``POPCLI_CPU_KERNELS=0``. ``status()`` says which
and why.

One build per instruction set (``ISAS``): ``generic`` (the compiler's default target: SSE2 on
x86-64, NEON on ARM64), ``avx2`` (``-mavx2 -mfma``: 256-bit vectors) and ``avx512`` (F/BW/DQ/VL:
512-bit vectors). The generic build is loaded first and asks the CPU (``popcli_isa_level``);
the widest build it supports is used, or the one ``POPCLI_KERNEL_ISA`` names (a level the CPU
lacks is refused in ``status()``, never run). Every build gives the same bits.

The builds are cached under ``$XDG_CACHE_HOME/popcli/kernels`` (or ``~/.cache``) keyed by a hash of
the sources, compiler and flags, and written atomically, so concurrent processes (torchrun ranks,
test workers) may race safely. This module imports nothing from popcli.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib.resources import files
from pathlib import Path

SOURCES = ("train.c", "rng.c", "rans.c", "packed.c", "isa.c")
ISAS = ("generic", "avx2", "avx512")  # lowest first: index = popcli_isa_level()
_ISA_FLAGS = {"generic": (), "avx2": ("-mavx2", "-mfma"),
              "avx512": ("-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl")}
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
    "popcli_isa_level": ([], _INT),
    "popcli_vector_bytes": ([], _INT),
    "popcli_packed_isa": ([], _INT),
    "popcli_packed_linear": ([_P, _P, _P, _P, _N, _N, _P, _N, _P, _INT, _INT], None),
    "popcli_packed_unpack": ([_P, _P, _P, _N, _N, _N, _P, _INT, _INT], None),
}

_lock = threading.Lock()
_loaded: tuple[ctypes.CDLL | None, str] | None = None  # (library, why) once tried
_builds: dict[str, ctypes.CDLL] = {}  # isa -> loaded build


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


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _load_build(compiler: str, isa: str) -> tuple[ctypes.CDLL, str]:
    """Build (or find cached) and load one ISA's library; (library, how it was built)."""
    flags = _FLAGS + _ISA_FLAGS[isa]
    try:
        path, how = _build(compiler, flags + _OPENMP), f"compiled with {compiler} (OpenMP)"
    except subprocess.SubprocessError:
        path, how = _build(compiler, flags), f"compiled with {compiler} (no OpenMP: one thread)"
    lib = ctypes.CDLL(str(path))
    for name, (argtypes, restype) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib, how


def _pick(supported: str) -> tuple[str, str]:
    """(isa to use, note): the widest supported, or POPCLI_KERNEL_ISA when the CPU has it."""
    asked = os.environ.get("POPCLI_KERNEL_ISA", "").strip().lower()
    if not asked or asked == "auto":
        return supported, ""
    if asked not in ISAS:
        return supported, f"; POPCLI_KERNEL_ISA={asked!r} unknown (use one of {', '.join(ISAS)})"
    if ISAS.index(asked) > ISAS.index(supported):
        return supported, f"; POPCLI_KERNEL_ISA={asked} refused: this CPU runs at most {supported}"
    return asked, " (POPCLI_KERNEL_ISA)"


def _try_load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("POPCLI_CPU_KERNELS", "1") == "0":
        return None, "disabled by POPCLI_CPU_KERNELS=0"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (set CC); using the numpy/torch path"
    try:
        generic, how = _load_build(compiler, "generic")
        supported = ISAS[generic.popcli_isa_level()] if _x86() else "generic"
        isa, note = _pick(supported)
        lib = generic
        if isa != "generic":
            try:
                lib, how = _load_build(compiler, isa)
            except (OSError, subprocess.SubprocessError, AttributeError) as err:  # an old compiler without -mavx512*
                isa, note = "generic", f"; the {isa} build failed ({err.__class__.__name__})"
        _builds[isa] = lib
    except (OSError, subprocess.SubprocessError, AttributeError) as err:
        return None, f"building them failed ({err.__class__.__name__}); using the numpy/torch path"
    return lib, f"{how}, {isa} path{note}"


def build(isa: str) -> ctypes.CDLL | None:
    """The library of one instruction set (``ISAS``), for tests and benchmarks that compare paths;
    None when the kernels are unavailable or this CPU cannot run that build."""
    if library() is None or isa not in ISAS:
        return None
    with _lock:
        if isa not in _builds:
            supported = ISAS[library().popcli_isa_level()] if _x86() else "generic"
            compiler = _compiler()
            if ISAS.index(isa) > ISAS.index(supported) or compiler is None:
                return None
            try:
                _builds[isa] = _load_build(compiler, isa)[0]
            except (OSError, subprocess.SubprocessError, AttributeError):
                return None
    return _builds[isa]


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
