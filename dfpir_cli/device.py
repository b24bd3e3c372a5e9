"""Choosing the compute device: CUDA, then Apple MPS, then CPU, unless the user says otherwise."""

from __future__ import annotations

import ctypes

import torch

from .errors import InputError


def pick_device(spec: str = "auto") -> torch.device:
    """Resolve ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` to an available device."""
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as error:
        raise InputError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: CUDA is not available on this machine (use --device auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"--device {spec}: Apple MPS is not available on this machine (use --device auto or cpu)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


# glibc returns freed heap memory to the system above 128 KiB of slack by default, so every forward pass of a
# large tile faults its activations' pages in again: measured 7-10 s of system time in a 3 MP restore, 1 s
# with these (the pages stay mapped until the process ends; peak memory is unchanged).
_TRIM_THRESHOLD, _TOP_PAD = 1 << 30, 1 << 29  # bytes
_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2  # mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of unmapping it; False where not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)) and bool(libc.mallopt(_M_TOP_PAD, _TOP_PAD))
    except (OSError, AttributeError):  # not Linux with glibc (macOS, Windows, musl): nothing to tune
        return False
