"""Numeric precision: which autocast dtype a device runs at, for restore, eval and train.

``auto`` means bf16 autocast where the hardware computes bf16 natively (CPUs with AVX512-BF16 or AMX, where a
bf16 matmul runs about 2.4x the fp32 one; CUDA GPUs of compute capability 8.0 or newer) and fp32 everywhere
else, where bf16 would be emulated and slower. ``bf16``, ``fp16`` and ``fp32`` force a precision; fp16 needs a
GPU (CPU autocast in fp16 is slow and overflows easily), so a CPU runs fp32 instead and says so.

fp16 has 5 exponent bits: an activation beyond 65504 becomes inf, then NaN (the authors' weights are reported to
give NaNs in fp16). :class:`FiniteGuard` re-runs a pass whose output is not finite in a precision with fp32's
range; :class:`Reruns` counts those passes for the summary.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from ..errors import InputError

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
        # Not torch.cuda.is_bf16_supported(): recent PyTorch says True there also where bf16 is only emulated (before
        # Ampere, compute capability 8.0), slower than fp32. ROCm GPUs compute bf16 natively.
        if not torch.cuda.is_available():
            return False
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8
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


def exact_autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Run at ``dtype`` inside any autocast the caller has entered: fp32 turns autocast off."""
    if dtype is torch.float32:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)


def safer_precision(dtype: torch.dtype, device: torch.device) -> torch.dtype | None:
    """The precision to re-run a non-finite pass in: from fp16, bf16 where ``device`` has it natively (fp32's
    range at fp16's speed), else fp32; from bf16, fp32; from fp32, none."""
    if dtype is torch.float16:
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if dtype is torch.bfloat16:
        return torch.float32
    return None


def _tiles(count: int) -> str:
    return f"{count} tile gave" if count == 1 else f"{count} tiles gave"


@dataclass
class Reruns:
    """Tiles (or whole images) whose forward pass gave a non-finite output, by what :class:`FiniteGuard` did."""

    steps: dict[str, int] = field(default_factory=dict)  # "fp16->bf16": tiles re-run from one precision in the other
    nonfinite: int = 0  # tiles whose output was still not finite in fp32: nothing safer to run them in

    def add(self, other: Reruns) -> None:
        for step, count in other.steps.items():
            self.steps[step] = self.steps.get(step, 0) + count
        self.nonfinite += other.nonfinite

    def notes(self) -> list[str]:
        """What a summary says about them (nothing when every pass was finite)."""
        notes = []
        for step, count in self.steps.items():
            before, _, after = step.partition("->")
            notes.append(f"{_tiles(count)} non-finite output in {before} and {'was' if count == 1 else 'were'} "
                         f"re-run in {after}")
        if self.nonfinite:
            notes.append(f"{_tiles(self.nonfinite)} non-finite output even in fp32: "
                         f"{'its' if self.nonfinite == 1 else 'their'} NaN pixels came out black (0)")
        return notes


class FiniteGuard:
    """``forward(images, codes)``, with each image (tile) whose output is not finite run again, safer.

    The first pass runs in whatever autocast the caller entered, which must be at ``dtype``. Only the images of the
    batch whose output holds a NaN or an infinity run again, in :func:`safer_precision` (fp16 -> bf16 or fp32, bf16
    -> fp32), until they are finite or fp32 gave up too; ``reruns`` counts both. A finite pass costs one
    ``isfinite`` reduction over the output: about 1 ms for a 512 px tile on a CPU, 0.01% of the small preset's pass.
    """

    def __init__(self, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dtype: torch.dtype,
                 reruns: Reruns | None = None) -> None:
        self.forward = forward
        self.dtype = dtype
        self.reruns = reruns if reruns is not None else Reruns()

    def __call__(self, images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        output = self.forward(images, codes)
        bad = ~torch.isfinite(output).flatten(1).all(1)
        if not bool(bad.any()):
            return output
        output = output.float().clone()
        dtype = self.dtype
        while bool(bad.any()):
            safer, count = safer_precision(dtype, images.device), int(bad.sum())
            if safer is None:
                self.reruns.nonfinite += count
                break
            step = f"{precision_name(dtype)}->{precision_name(safer)}"
            self.reruns.steps[step] = self.reruns.steps.get(step, 0) + count
            with exact_autocast(images.device, safer):
                output[bad] = self.forward(images[bad].float(), codes[bad].float()).float()
            bad = ~torch.isfinite(output).flatten(1).all(1)
            dtype = safer
        return output
