"""What a bug report needs: the versions of Python and the libraries dfpir runs on, the device and CPU features."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import torch

from .device import KEEP_FREED_ENV, freed_memory_kept, pick_device
from .precision import _cpu_flags, cpu_has_native_bf16

PACKAGES = ("dfpir-cli", "torch", "torchvision", "numpy", "opencv-python-headless", "opencv-python", "open_clip_torch",
            "huggingface_hub", "safetensors", "scikit-image", "pillow", "typer", "rich", "gdown")
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "f16c", "fma")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, str]:
    """Name -> value, in the order a report reads best; packages that are not installed are left out."""
    report = {"python": f"{platform.python_version()} ({sys.executable})",
              "platform": platform.platform(), "machine": platform.machine(), "cpu cores": str(os.cpu_count())}
    for package in PACKAGES:
        version = _version(package)
        if version is not None:
            report[package] = version
    try:
        import cv2

        report["cv2 (imported)"] = cv2.__version__
    except ImportError as error:
        report["cv2 (imported)"] = f"cannot be imported: {error}"
    report["torch CUDA build"] = torch.version.cuda or "none (CPU build)"
    report["CUDA available"] = str(torch.cuda.is_available())
    if torch.cuda.is_available():
        report["GPUs"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        report["cuDNN"] = str(torch.backends.cudnn.version())
    report["MPS available"] = str(torch.backends.mps.is_available())
    report["device (auto)"] = str(pick_device("auto"))
    report["torch threads"] = str(torch.get_num_threads())
    flags = _cpu_flags()
    report["CPU features"] = " ".join(f for f in CPU_FEATURES if f in flags) or "unknown (no /proc/cpuinfo)"
    report["CPU native bf16"] = str(cpu_has_native_bf16())
    report["freed memory kept"] = (f"yes (glibc mallopt; {KEEP_FREED_ENV}=0 turns it off)" if freed_memory_kept()
                                   else "no (allocator as is)")
    return report
