"""Tiled inference: restore images of any size in overlapping tiles with smooth blending.

The network's cost in memory grows with the pixels of one forward pass, so a large photo is cut into
overlapping tiles that run in batches. Each tile's output is weighted by a separable raised-cosine window
that ramps up across the overlap with its neighbours (never reaching zero) and stays flat at the image
border; the weights are normalised per pixel, so the blend is a partition of unity and there is no seam.
Because the tiles form a grid, the normalisation is separable too: no per-pixel weight buffer is kept,
and the only image-sized buffer is the output itself.

Restormer's attention (MDTA, DESIGN.md section 2) is global over a tile's pixels, so a tile does not see
exactly what the whole image would show it: tiled output is close to, not identical with, untiled output.
Large tiles and a generous overlap bring them closer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..model import DFPIR, DFPIRConfig, restore_any_size

ProgressCallback = Callable[[int, int], None]
Restore = Callable[[torch.Tensor, ProgressCallback | None], torch.Tensor]  # (image, progress) -> restored image
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, codes) -> the network's output

# Float32 values alive per pixel of a tile at the peak of a forward pass, per channel of ``config.dim``.
# Counted from the full-resolution refinement block (GDFN at 2*dim channels: project_in 10.6*dim, the
# depthwise output as much again, the gated halves, plus the U-Net skips held meanwhile), then rounded up
# for the allocator's slack. Measured on CPU (ru_maxrss growth of one 256-384 px pass): 44-50*dim for the
# small and tiny presets.
ACTIVATION_FLOATS_PER_PIXEL_PER_DIM = 64
GUIDE_BLUR = 9  # box-blur side, in thumbnail pixels, of scale_guided's low frequencies
GUIDED_FAMILIES = ("haze",)  # degradation families a --haze-guide thumbnail guides (plan.HAZE_GUIDE_SIDE)
CPU_TILE_CAP = 512  # larger tiles leave the CPU caches behind: slower, unless the prompt needs the context
GPU_TILE_CAP = 2048
MIN_TILE = 64


def _axis_plan(length: int, size: int, overlap: int) -> list[tuple[int, torch.Tensor]]:
    """Tile starts along one axis, each with its normalised blending weights (a partition of unity).

    As few tiles as keep every overlap at least ``overlap`` wide, spread evenly so that the first and last
    tiles are flush with the borders and all overlaps are (within a pixel) equal. A tile's weight
    ramps (raised cosine) across the pixels it shares with each neighbour and is 1 elsewhere, including
    at the image border, where there is nothing to blend with.
    """
    extent = min(size, length)
    if size >= length:
        return [(0, torch.ones(extent, dtype=torch.float64))]
    count = 1 + math.ceil((length - size) / (size - overlap))
    starts = [round(index * (length - size) / (count - 1)) for index in range(count)]
    windows = []
    for index, start in enumerate(starts):
        weight = torch.ones(size, dtype=torch.float64)
        positions = torch.arange(size, dtype=torch.float64) + 0.5
        if index > 0:
            shared = starts[index - 1] + size - start
            ramp = 0.5 - 0.5 * torch.cos(math.pi * positions[:shared] / shared)
            weight[:shared] *= ramp
        if index < len(starts) - 1:
            shared = start + size - starts[index + 1]
            ramp = 0.5 - 0.5 * torch.cos(math.pi * positions[:shared] / shared)
            weight[size - shared:] *= ramp.flip(0)
        windows.append(weight)
    total = torch.zeros(length, dtype=torch.float64)
    for start, weight in zip(starts, windows, strict=True):
        total[start:start + size] += weight
    return [(start, weight / total[start:start + size]) for start, weight in zip(starts, windows, strict=True)]


def fitted_tile(length: int, size: int, overlap: int, multiple: int) -> int:
    """The smallest tile side (a multiple of ``multiple``, at most ``size``) that needs no more tiles along an
    axis of ``length`` than ``size`` does, with every overlap still at least ``overlap`` wide.

    Tiles of the largest size cover a 4000 px side in 9 tiles of 512 (4608 px computed, 15% waste); 9 tiles
    of 480 cover it too (8%). Same number of forward passes, fewer pixels each: less work for the same seams.
    """
    if size >= length:
        return size
    count = 1 + math.ceil((length - size) / (size - overlap))
    needed = math.ceil((length + (count - 1) * overlap) / count)
    return min(size, _round_up(needed, multiple))


def tile_shape(height: int, width: int, tile: int, overlap: int, multiple: int) -> tuple[int, int]:
    """(height, width) of the tiles :func:`restore_tiled` cuts an image into with tiles of side ``tile``."""
    tile = max(multiple, tile // multiple * multiple)
    size_h, size_w = min(tile, _round_up(height, multiple)), min(tile, _round_up(width, multiple))
    return fitted_tile(height, size_h, overlap, multiple), fitted_tile(width, size_w, overlap, multiple)


def _pad_to(tile: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reflect-pad a tile at its bottom/right up to (height, width); replicate where reflect cannot reach."""
    pad_h, pad_w = height - tile.shape[-2], width - tile.shape[-1]
    if not (pad_h or pad_w):
        return tile
    mode = "reflect" if pad_h < tile.shape[-2] and pad_w < tile.shape[-1] else "replicate"
    return F.pad(tile, (0, pad_w, 0, pad_h), mode=mode)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def restore_tiled(model: DFPIR, image: torch.Tensor, codes: torch.Tensor, tile: int | None, overlap: int,
                  batch_size: int = 4, progress: ProgressCallback | None = None,
                  forward: Forward | None = None) -> torch.Tensor:
    """Restore ``image`` (B, 3, H, W) with prompt ``codes`` (B, text_dim) in overlapping tiles.

    ``tile`` is the side of a square tile (rounded down to ``model.multiple_of``); ``None``, or a tile at
    least as large as the image, runs the image whole. ``batch_size`` tiles go through the network at
    once. Tiles move to the model's device and back, so a huge image may stay in host memory while the
    model runs on a GPU; the float32 result lives on the image's device. ``progress(done, total)`` is
    called after each batch of tiles. ``forward(tiles, codes)`` runs each batch (default: ``model``; restore and
    eval pass a :class:`~dfpir_cli.base.precision.FiniteGuard`). Pure: no I/O, no device choice, no printing; autocast
    is the caller's.
    """
    if image.ndim != 4:
        raise InputError(f"expected an image batch (B, C, H, W), got shape {tuple(image.shape)}")
    if codes.ndim != 2 or codes.shape[0] != image.shape[0]:
        raise InputError(f"expected one prompt code per image, shape ({image.shape[0]}, text_dim); "
                         f"got {tuple(codes.shape)}")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    device = next(model.parameters()).device
    batch, channels, height, width = image.shape
    multiple = model.multiple_of
    with torch.no_grad():
        if tile is None or (tile >= height and tile >= width):
            if progress:
                progress(0, 1)
            restored = restore_any_size(model, image.to(device), codes.to(device), forward)
            restored = restored.float().to(image.device)
            if progress:
                progress(1, 1)
            return restored
        tile = max(multiple, tile // multiple * multiple)
        if overlap < 0 or overlap >= tile:
            raise InputError(f"tile overlap must be at least 0 and smaller than the tile ({tile}), not {overlap}")
        size_h, size_w = tile_shape(height, width, tile, overlap, multiple)
        rows, columns = _axis_plan(height, size_h, overlap), _axis_plan(width, size_w, overlap)
        jobs = [(b, row, column) for b in range(batch) for row in rows for column in columns]
        output = torch.zeros((batch, model.config.out_channels, height, width), dtype=torch.float32,
                             device=image.device)
        for first in range(0, len(jobs), batch_size):
            chunk = jobs[first:first + batch_size]
            tiles = torch.stack([
                _pad_to(image[b, :, y:y + size_h, x:x + size_w], size_h, size_w) for b, (y, _), (x, _) in chunk])
            restored = (forward or model)(tiles.to(device), codes[[b for b, _, _ in chunk]].to(device))
            restored = restored.float().to(image.device)
            for (b, (y, weight_y), (x, weight_x)), piece in zip(chunk, restored, strict=True):
                h, w = weight_y.shape[0], weight_x.shape[0]
                blend = (weight_y[:, None] * weight_x[None, :]).to(torch.float32).to(image.device)
                output[b, :, y:y + h, x:x + w] += piece[:, :h, :w] * blend
            if progress:
                progress(min(first + batch_size, len(jobs)), len(jobs))
    return output


def count_tiles(height: int, width: int, tile: int | None, overlap: int, multiple: int = DFPIR.multiple_of) -> int:
    """How many forward passes (per image) :func:`restore_tiled` makes for this size: for progress displays."""
    if tile is None or (tile >= height and tile >= width):
        return 1
    size_h, size_w = tile_shape(height, width, tile, overlap, multiple)
    return len(_axis_plan(height, size_h, overlap)) * len(_axis_plan(width, size_w, overlap))


def computed_pixels(height: int, width: int, tile: int | None, overlap: int,
                    multiple: int = DFPIR.multiple_of) -> int:
    """Pixels the network computes for one image (tiles times tile area; the padded image when run whole)."""
    if tile is None or (tile >= height and tile >= width):
        return _round_up(height, multiple) * _round_up(width, multiple)
    size_h, size_w = tile_shape(height, width, tile, overlap, multiple)
    return count_tiles(height, width, tile, overlap, multiple) * size_h * size_w


def _available_host_memory() -> int:
    """Bytes of RAM available to a new allocation: MemAvailable on Linux (less where a cgroup, as in a container
    or a SLURM job, allows less), free pages elsewhere."""
    meminfo = Path("/proc/meminfo")
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return min(int(line.split()[1]) * 1024, _cgroup_headroom())
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes this process's memory cgroup (v2, else v1) still allows; a huge number where none limits it."""
    unlimited = 1 << 62
    for limit_name, usage_name in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = (root / limit_name).read_text().strip()
            if limit == "max":
                return unlimited
            return max(0, int(limit) - int((root / usage_name).read_text().strip()))
        except (OSError, ValueError):
            continue
    return unlimited


def _free_device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        if mps is None:
            return _available_host_memory()
        try:
            return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return _available_host_memory()
    return _available_host_memory()


def bytes_per_tile_pixel(config: DFPIRConfig, dtype: torch.dtype = torch.float32) -> int:
    """Estimated peak activation memory per pixel of a forward pass, in bytes."""
    element = torch.empty((), dtype=dtype).element_size()
    return ACTIVATION_FLOATS_PER_PIXEL_PER_DIM * config.dim * element


def auto_tile_size(device: torch.device | str, model_config: DFPIRConfig, dtype: torch.dtype = torch.float32,
                   batch_size: int = 1, free_bytes: int | None = None, speed_cap: bool = True) -> int:
    """The largest tile side whose forward pass (``batch_size`` tiles) fits in the device's free memory.

    Uses half of the free GPU memory, or a quarter of the available RAM on CPU (the image buffers and the
    rest of the system need the remainder), capped at 2048 px on a GPU and, with ``speed_cap``, at 512 px on
    CPU (cache-friendly: whole 1-2 MP images ran 10-33% slower than in 512 px tiles); never below 64 px.
    Images no larger than the tile run whole. ``free_bytes`` overrides the measurement (for tests and for
    callers that know better).
    """
    device = torch.device(device)
    if free_bytes is None:
        free_bytes = _free_device_memory(device)
    share = 0.5 if device.type in ("cuda", "mps") else 0.25
    pixels = share * free_bytes / (bytes_per_tile_pixel(model_config, dtype) * max(1, batch_size))
    side = int(math.sqrt(max(pixels, 0.0))) // DFPIR.multiple_of * DFPIR.multiple_of
    cap = CPU_TILE_CAP if device.type == "cpu" and speed_cap else GPU_TILE_CAP
    return max(MIN_TILE, min(cap, side))


def tiled_restore(model: DFPIR, codes: torch.Tensor, tile: int | None, overlap: int, batch_size: int = 4,
                  guide: int = 0, forward: Forward | None = None) -> Restore:
    """``restore_tiled`` with these settings as a :data:`Restore`, its tone taken from a thumbnail ``guide``
    pixels on its longer side (:func:`scale_guided`; 0: none): one view of ``restore`` and ``eval``."""
    def tiles(image: torch.Tensor, progress: ProgressCallback | None) -> torch.Tensor:
        return restore_tiled(model, image, codes, tile, overlap, batch_size, progress, forward)

    def restore(image: torch.Tensor, progress: ProgressCallback | None) -> torch.Tensor:
        return scale_guided(tiles, image, guide, progress)
    return restore


def scale_guided(restore: Restore, image: torch.Tensor, side: int,
                 progress: ProgressCallback | None = None) -> torch.Tensor:
    """``restore(image, progress)`` (B, 3, H, W) with its low frequencies taken from a thumbnail's restoration.

    The thumbnail is ``image`` scaled (area) so its longer side is ``side``; both restorations are box-blurred
    (9 px at the thumbnail's scale) and the difference between the thumbnail's and the shrunk full-size one
    is scaled back up (bilinear) and added. The detail of the full-size restoration stays; its tone (haze's
    airlight and transmission) becomes the thumbnail's. An image no larger than ``side``, or ``side`` 0,
    is restored as it is. Not clamped.
    """
    height, width = image.shape[-2:]
    if side <= 0 or max(height, width) <= side:
        return restore(image, progress)
    scale = side / max(height, width)
    size = (max(8, round(height * scale)), max(8, round(width * scale)))
    thumbnail = restore(F.interpolate(image.float(), size=size, mode="area"), None).float()
    detail = restore(image, progress).float()
    shrunk = F.interpolate(detail, size=size, mode="area")
    correction = _box_blur(thumbnail) - _box_blur(shrunk)
    return detail.add_(F.interpolate(correction, size=(height, width), mode="bilinear", align_corners=False))


def _box_blur(image: torch.Tensor, size: int = GUIDE_BLUR) -> torch.Tensor:
    return F.avg_pool2d(image, size, stride=1, padding=size // 2, count_include_pad=False)
