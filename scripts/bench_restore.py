"""Benchmark `dfpir restore` on one large photo on CPU: megapixels per second and peak memory.

Writes a synthetic photo (smooth colour fields, edges and noise) of --size to a temporary folder, then
restores it file to file (read, tiled restore, atomic write) with a randomly initialised network of
--preset, as `dfpir restore` does. Prints the time, megapixels per second and the peak resident memory
(ru_maxrss) next to the size of one float32 image buffer, so "peak memory grows only with the image
buffers" can be checked by running two sizes:

    .venv/bin/python scripts/bench_restore.py                      # 4000x3000, small preset
    .venv/bin/python scripts/bench_restore.py --size 2000x1500     # a quarter of the pixels
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dfpir_cli.checkpoint import Checkpoint, PromptBank
from dfpir_cli.imageio import read_image, write_image
from dfpir_cli.model import DFPIR, PRESETS
from dfpir_cli.prompts import FIVE_TASK, random_codes
from dfpir_cli.restore import Restorer


def max_rss_mib() -> float:
    scale = 1 / 1024**2 if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((height // 64 + 2, width // 64 + 2, 3)).astype(np.float32)
    base = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC),
                      dtype=np.float32)
    base[height // 3:height // 3 + 8] = 255  # a few hard edges
    base[:, width // 2:width // 2 + 8] = 0
    noisy = base + rng.normal(0, 15, base.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_photo(path: str, width: int, height: int) -> None:
    """Runs in a child process, so that making the photo does not count in this process's peak memory."""
    Image.fromarray(synthetic_photo(width, height)).save(path, compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the photo (default 4000x3000)")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: auto, as dfpir restore)")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = PRESETS[args.preset]
    model = DFPIR(config).eval()
    prompts = PromptBank(FIVE_TASK, FIVE_TASK, random_codes(FIVE_TASK, 0, config.text_dim), "random")
    checkpoint = Checkpoint(model, prompts)
    restorer = Restorer(checkpoint, prompts.code("haze"), torch.device("cpu"), "fp32", args.tile, args.overlap,
                        args.batch_size)
    tiles = restorer.tiles_for(height, width)
    print(f"preset {args.preset} ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"{width}x{height} = {width * height / 1e6:.1f} MP, tile {restorer.tile}, overlap {args.overlap}, "
          f"batch {restorer.batch_size}, {tiles} tiles, {torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "photo.png", Path(folder) / "restored.png"
        child = multiprocessing.get_context("spawn").Process(target=write_photo, args=(str(source), width, height))
        child.start()
        child.join()
        # Warm up (allocator, kernels) on one tile, then measure from a known baseline.
        restorer.restore(torch.rand(3, 64, 64))
        baseline = max_rss_mib()
        tracemalloc.start()
        started = time.perf_counter()
        image = read_image(source)
        read_done = time.perf_counter()
        restored = restorer.restore(image.pixels)
        restore_done = time.perf_counter()
        write_image(target, restored, image)
        finished = time.perf_counter()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak = max_rss_mib()

    megapixels = width * height / 1e6
    buffer_mib = 3 * width * height * 4 / 1024**2
    print(f"read {read_done - started:.1f} s, restore {restore_done - read_done:.1f} s, "
          f"write {finished - restore_done:.1f} s, total {finished - started:.1f} s")
    print(f"speed: {megapixels / (restore_done - read_done):.4f} MP/s restoring, "
          f"{megapixels / (finished - started):.4f} MP/s file to file")
    print(f"peak resident memory (ru_maxrss): {peak:.0f} MiB; before the run {baseline:.0f} MiB; "
          f"growth {peak - baseline:.0f} MiB")
    print(f"one float32 RGB image buffer: {buffer_mib:.0f} MiB; growth / buffer = {(peak - baseline) / buffer_mib:.2f}")
    print(f"tracemalloc peak (numpy/Python allocations only, not torch's): {traced_peak / 1024**2:.0f} MiB")


if __name__ == "__main__":
    main()
