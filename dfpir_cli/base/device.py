"""Choosing the compute device: CUDA, then Apple MPS, then CPU, unless the user says otherwise."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from ..errors import InputError


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


# glibc's malloc serves blocks above its mmap threshold (128 KiB, raised on the fly up to 32 MiB) with fresh
# mappings and hands them back on free; it also trims the heap's free top above a threshold. A forward pass
# allocates activations of tens of MiB, so every tile faulted the same pages in again: 160-290 thousand page
# faults and 0.3-0.6 s of system time per 456x480 tile, measured. With both thresholds at 1 GiB the heap keeps
# and reuses them: no faults after the first tile; a 3 MP restore measured 1.16x faster in bf16 and 1.20x in
# fp32 (scripts/bench_restore.py --allocator both) for about 150 MiB more peak memory, returned when the process
# ends. Both must move together: a trim threshold alone switches off glibc's dynamic mmap threshold and leaves
# it at 128 KiB, which doubles the faults.
KEEP_FREED_ENV = "DFPIR_KEEP_FREED_MEMORY"  # "0": leave glibc's allocator as it is
_KEEP_BYTES, _FALLBACK_MMAP_BYTES = 1 << 30, 32 << 20  # older glibc refuses an mmap threshold above 32 MiB
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_allocator = {"kept": False}  # whether keep_freed_memory() took effect in this process


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep large freed blocks for reuse instead of unmapping them.

    False (nothing changed) where the allocator is not glibc's (macOS, Windows, musl) or ``$DFPIR_KEEP_FREED_MEMORY``
    is 0.
    """
    if os.environ.get(KEEP_FREED_ENV, "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return False
    if not (mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) or mallopt(_M_MMAP_THRESHOLD, _FALLBACK_MMAP_BYTES)):
        return False
    _allocator["kept"] = bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
    return _allocator["kept"]


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` has tuned this process's allocator."""
    return _allocator["kept"]
