"""Numeric precision: which autocast dtype a device runs at, for restore, eval and train.

``auto`` means bf16 autocast where the hardware computes bf16 natively (CPUs with AVX512-BF16 or AMX, where a
bf16 matmul runs about 2.4x the fp32 one; CUDA GPUs that support bf16) and fp32 everywhere else, where bf16
would be emulated and slower. ``bf16``, ``fp16`` and ``fp32`` force a precision; fp16 needs a GPU (CPU
autocast in fp16 is slow and overflows easily), so a CPU runs fp32 instead and says so.
"""

from __future__ import annotations

import contextlib
import platform
from functools import cache
from pathlib import Path

import torch

from .errors import InputError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CHOICES = ("auto", *PRECISIONS)
# /proc/cpuinfo flags of x86 CPUs whose bf16 dot products run in hardware (oneDNN uses them for bf16 convs).
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def check_precision(precision: str) -> str:
    """The canonical name of a requested precision; unknown names are refused."""
    key = precision.strip().lower()
    if key not in CHOICES:
        raise InputError(f"--precision {precision}: choose one of {', '.join(CHOICES)}")
    return key


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@cache
def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX-BF16 (read from /proc/cpuinfo; False where it cannot be read)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return bool(_cpu_flags() & _NATIVE_BF16_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively, hence faster than fp32, on ``device``."""
    if device.type == "cpu":
        return cpu_has_native_bf16()
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype, str]:
    """The autocast dtype to run at on ``device``, and a note when the request cannot be honoured as asked."""
    key = check_precision(precision)
    if key == "auto":
        return (torch.bfloat16 if native_bf16(device) else torch.float32), ""
    dtype = PRECISIONS[key]
    if dtype is torch.float16 and device.type == "cpu":
        return torch.float32, "fp16 needs a GPU; ran fp32 on CPU (use --precision bf16 for reduced precision on CPU)"
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16, "bf16 is not supported by this GPU; ran fp16"
    if dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
        return dtype, "this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and likely slower than fp32"
    return dtype, ""


def precision_name(dtype: torch.dtype) -> str:
    return next(name for name, candidate in PRECISIONS.items() if candidate is dtype)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``; a no-op for fp32.

    Under CPU autocast convolutions, matmuls and linears run in bf16; normalisations, softmax and reductions
    stay fp32 (PyTorch's CPU autocast op lists), which is what keeps the output within 45 dB of fp32.
    """
    if dtype is torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
