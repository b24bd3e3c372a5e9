"""``--precision auto`` for restore and eval: bf16 only where it restores like fp32, measured per checkpoint.

Native bf16 doubles the CPU's arithmetic rate, but a checkpoint is only run in bf16 when its bf16 and fp32
restorations of the benchmark photos (the five scikit-image photos of ``dfpir eval --dataset synthetic``,
256x256, each degraded as one of the checkpoint's prompts asks) agree to :data:`AGREEMENT_DB` (45 dB PSNR)
or better on every photo. The check takes one fp32 and one bf16 forward pass per photo, the first time a
checkpoint is used on a kind of device; its result is cached under the weights' fingerprint (a hash of every
tensor and prompt code), the device, the PyTorch version and :data:`ARITHMETIC_VERSION`, in
``$DFPIR_CACHE_DIR`` (default ``$XDG_CACHE_HOME/dfpir``, else ``~/.cache/dfpir``), file ``precision.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base.imageio import read_image
from ..base.precision import autocast, check_precision, native_bf16, resolve_precision
from ..data.photos import float_pixels, shipped_photos, square_crop, synthetic_rng
from ..data.synthesis import synthesize
from ..weights.checkpoint import Checkpoint, prompt_weights_applied
from ..weights.prompts import DEGRADATIONS
from .tiling import restore_tiled

AGREEMENT_DB = 45.0  # lowest PSNR between bf16 and fp32 restorations for auto to pick bf16
NONFINITE_DB = 0.0  # the agreement when a bf16 restoration is not finite (two images in [0, 1] agree to 0 dB at worst)
PROBE_SIZE = 256  # side of the benchmark crops the check restores
CACHE_ENV = "DFPIR_CACHE_DIR"
# Bump when the network's arithmetic changes (how a forward pass rounds, not what it computes), so that cached
# checks made by the old code run again. 2: the channel attention's bf16 sums of squares as a GEMM (restormer).
ARITHMETIC_VERSION = 2


@dataclass(frozen=True)
class Choice:
    dtype: torch.dtype
    note: str = ""  # what the user should know about the choice (empty: nothing unusual)
    agreement_db: float | None = None  # bf16 vs fp32 on the benchmark photos, when it was checked


def cache_path() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dfpir")
    return Path(root) / "precision.json"


def fingerprint(checkpoint: Checkpoint, prompt: str | None = None) -> str:
    """A hash of the network's tensors and the prompt codes: the same weights give the same fingerprint.
    ``prompt``: the network as that prompt runs it (with its own weights, :attr:`Checkpoint.prompt_weights`, in
    place of the shared ones); None: the shared network and every prompt's own weights."""
    digest = hashlib.sha256()
    tensors = checkpoint.state_of(prompt)
    if prompt is None:
        tensors.update({f"prompt_weights.{name}.{key}": value for name, values in checkpoint.prompt_weights.items()
                        for key, value in values.items()})
    for name, tensor in sorted(tensors.items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(checkpoint.prompts.codes.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def _device_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def _probe_images(checkpoint: Checkpoint, size: int) -> list[tuple[np.ndarray, str]]:
    """The benchmark photos, each degraded as one of the checkpoint's prompts asks (cycling through both)."""
    photos = shipped_photos()
    names = list(checkpoint.prompts.names)
    images = []
    for index in range(max(len(photos), len(names))):
        clean = square_crop(float_pixels(read_image(photos[index % len(photos)])), size)
        name = names[index % len(names)]
        degraded = synthesize(clean, name, synthetic_rng(0, name, index)) if name in DEGRADATIONS else clean
        images.append((degraded, name))
    return images


def measure_bf16_agreement(checkpoint: Checkpoint, device: torch.device, size: int = PROBE_SIZE) -> float:
    """Lowest PSNR (dB) between bf16-autocast and fp32 restorations of the benchmark photos on ``device``; the raw
    bf16 output, not re-run where it is not finite (:data:`NONFINITE_DB` then)."""
    model = checkpoint.model.to(device).eval()
    lowest = math.inf
    for image, name in _probe_images(checkpoint, size):
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        code = checkpoint.prompts.code(name)[None]
        outputs = []
        for dtype in (torch.float32, torch.bfloat16):
            with prompt_weights_applied(model, checkpoint.weights_of(name)), torch.inference_mode(), \
                    autocast(device, dtype):
                outputs.append(restore_tiled(model, tensor, code, None, 0).float().clamp(0, 1))
        mse = float((outputs[0] - outputs[1]).double().square().mean())
        if not math.isfinite(mse):
            return NONFINITE_DB  # bf16 gave a NaN or an infinity: nothing like fp32
        lowest = min(lowest, 10 * math.log10(1 / mse) if mse > 0 else math.inf)
    return lowest


def _read_cache(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {key: float(value) for key, value in data.items() if isinstance(value, (int, float))} \
        if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: dict[str, float]) -> None:
    """Atomically; a cache that cannot be written only means the check runs again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".precision.", suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "w") as stream:
            json.dump(entries, stream, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except OSError:
        pass


def bf16_agreement(checkpoint: Checkpoint, device: torch.device,
                   measuring: Callable[[], None] | None = None) -> float:
    """:func:`measure_bf16_agreement`, cached; ``measuring`` is called first when it has to be measured."""
    path = cache_path()
    key = f"{fingerprint(checkpoint)}|{_device_kind(device)}|torch-{torch.__version__}|arithmetic-{ARITHMETIC_VERSION}"
    cached = _read_cache(path)
    if key in cached:
        return cached[key]
    if measuring is not None:
        measuring()
    value = measure_bf16_agreement(checkpoint, device)
    _write_cache(path, {**_read_cache(path), key: value if math.isfinite(value) else 999.0})
    return value


def inference_precision(checkpoint: Checkpoint, device: torch.device, precision: str,
                        measuring: Callable[[], None] | None = None) -> Choice:
    """The dtype to restore at: forced ones as :func:`~dfpir_cli.base.precision.resolve_precision` says; ``auto``
    bf16 where the device has native bf16 and this checkpoint's bf16 output agrees with fp32 (see above)."""
    if check_precision(precision) != "auto":
        return Choice(*resolve_precision(precision, device))
    if not native_bf16(device):
        return Choice(torch.float32)
    agreement = bf16_agreement(checkpoint, device, measuring)
    if agreement >= AGREEMENT_DB:
        return Choice(torch.bfloat16, agreement_db=agreement)
    if agreement <= NONFINITE_DB:
        return Choice(torch.float32, "auto chose fp32: this checkpoint's bf16 restorations of the benchmark photos are "
                                     "not finite (NaN or infinity)", agreement)
    return Choice(torch.float32, f"auto chose fp32: this checkpoint's bf16 restorations differ from fp32 "
                                 f"({agreement:.1f} dB PSNR < {AGREEMENT_DB:.0f} dB on the benchmark photos)",
                  agreement)

