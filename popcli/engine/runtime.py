"""Where training runs: device choice, mixed precision, CPU threads.

Kept apart from the loop so the loop reads the same on CPU, CUDA and MPS.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..errors import PopcliError, UsageError, count


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full float32

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype is torch.float16

    def fields(self) -> dict[str, str | int | None]:
        """{"device": "cpu" | "cuda:0" | ..., "threads": torch's CPU threads (None off the CPU),
        "amp": "bfloat16" | "float16" | None}: what a summary records, one fact per key."""
        return {"device": str(self.device), "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
                "amp": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else None}

    def describe(self) -> str:
        amp = f", amp {str(self.amp_dtype).removeprefix('torch.')}" if self.amp_dtype else ""
        threads = f", {count(torch.get_num_threads(), 'thread')}" if self.device.type == "cpu" else ""
        return f"{self.device}{amp}{threads}"


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu. An unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PopcliError(f"device {name!r} asked for, but torch sees no CUDA GPU; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise PopcliError(f"device {name!r} asked for, but MPS is not available; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def make_runtime(device_name: str = "auto", amp: bool = True, threads: int | None = None) -> Runtime:
    device = resolve_device(device_name)
    if threads is not None:
        torch.set_num_threads(threads)
    amp_dtype = None
    if amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(device, amp_dtype)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper limit on 64-bit
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MiB for reuse instead of unmapping them.

    By default glibc serves large blocks with mmap and returns them to the OS on free, so a
    training step that allocates the same tensors again pays page faults for every one of them
    (tens of percent of a small CPU step, varying run to run). This is a process-wide setting,
    so only applications call it (the CLI and the benchmarks), never the library. Returns
    whether it took effect (False off glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
