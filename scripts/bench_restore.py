"""Benchmark `dfpir restore` on one large photo: megapixels per second, peak memory, precision against precision.

Writes a synthetic photo (smooth colour fields, edges and noise) of --size to a temporary folder, then runs
the real command, `dfpir restore PHOTO -d haze --json`, once per variant and round, each in its own process
(so each has its own peak resident memory, read with ``os.wait4``). Variants are `--precision` values:
the default compares `auto` (what `dfpir restore` does with no options) against `fp32`. Rounds alternate the
variants, so load from other processes on a shared machine hits each alike; the speed-up is the ratio of
median restore times in this one run. Restored images are compared with the first variant's (PSNR).

The weights: the shipped default model, `--weights DIR`, or `--preset NAME` for a randomly initialised
network of that size (saved to the temporary folder; speed only). auto's one-off bf16 check for the
weights runs before the timed rounds, in a cache folder of its own, and its time is printed apart.

    .venv/bin/python scripts/bench_restore.py                                  # 4000x3000, auto vs fp32
    .venv/bin/python scripts/bench_restore.py --preset paper --precision bf16,fp32 --rounds 1
    .venv/bin/python scripts/bench_restore.py --size 2000x1500 --precision fp32  # a quarter of the pixels
    .venv/bin/python scripts/bench_restore.py --precision auto --tile auto,512   # haze's wide tile vs 512 px
    .venv/bin/python scripts/bench_restore.py --allocator both --rounds 1        # + glibc's allocator left as is
    .venv/bin/python scripts/bench_restore.py --device cuda --precision bf16,fp16,fp32 --batch-size 8
    .venv/bin/python scripts/bench_restore.py --precision auto --backend pytorch,onnxruntime   # today's path vs ORT
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dfpir_cli.base.device import KEEP_FREED_ENV
from dfpir_cli.model import DFPIR, PRESETS
from dfpir_cli.restore.pipeline import DEFAULT_OVERLAP
from dfpir_cli.restore.plan import TONE_FAMILIES
from dfpir_cli.restore.precision_check import CACHE_ENV
from dfpir_cli.restore.tiling import computed_pixels, count_tiles, tile_shape
from dfpir_cli.weights.checkpoint import PromptBank, save_checkpoint
from dfpir_cli.weights.prompts import DEGRADATIONS, FIVE_TASK, family_of, random_codes

Image.MAX_IMAGE_PIXELS = None


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((height // 64 + 2, width // 64 + 2, 3)).astype(np.float32)
    base = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC),
                      dtype=np.float32)
    base[height // 3:height // 3 + 8] = 255  # a few hard edges
    base[:, width // 2:width // 2 + 8] = 0
    noisy = base + rng.normal(0, 15, base.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def run_restore(arguments: list[str], env: dict[str, str]) -> tuple[dict, float, float]:
    """Run `dfpir restore ... --json` in a child; (its JSON summary, wall seconds, peak RSS in MiB)."""
    command = [sys.executable, "-c", "from dfpir_cli.cli import app; app(prog_name='dfpir')", "restore", *arguments,
               "--json", "--quiet", "--overwrite"]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert child.stdout is not None and child.stderr is not None
    stdout, stderr = child.stdout.read(), child.stderr.read()  # --quiet: stderr stays small
    _, status, usage = os.wait4(child.pid, 0)  # reaps the child with its own resource usage
    wall = time.perf_counter() - started
    child.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"dfpir restore failed ({code}):\n{stderr}")
    scale = 1 / 1024**2 if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KiB on Linux
    peak = usage.ru_maxrss * scale
    return json.loads(stdout), wall, peak


def tile_of(summary: dict, degradation: str) -> int | None:
    """The tile a restore of this degradation ran in (haze and low light run in their own, wider one)."""
    return summary["tile_haze_lowlight"] if family_of(degradation) in TONE_FAMILIES else summary["tile"]


def psnr(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a), dtype=np.float64) / 255
    y = np.asarray(Image.open(b), dtype=np.float64) / 255
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the photo (default 4000x3000, 12 MP)")
    parser.add_argument("--weights", default=None, help="checkpoint folder (default: the shipped default model)")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help="a randomly initialised network of this preset instead of weights (speed only)")
    parser.add_argument("--precision", default="auto,fp32", help="comma list of --precision values to compare")
    parser.add_argument("--rounds", type=int, default=2, help="restores per variant, alternating (median kept)")
    parser.add_argument("--degradation", default="haze")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", default="auto",
                        help="tile side, or a comma list of them to compare (auto: dfpir restore's default)")
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the children")
    parser.add_argument("--backend", default="pytorch",
                        help="comma list of --backend values (pytorch, onnxruntime); onnxruntime variants run fp32 "
                             "whatever --precision says")
    parser.add_argument("--allocator", choices=("kept", "both"), default="kept",
                        help="both: also run each precision with glibc's allocator left as it is "
                             f"({KEEP_FREED_ENV}=0), to measure what keeping freed memory buys")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    precisions = [value.strip() for value in args.precision.split(",") if value.strip()]
    tiles = [value.strip() for value in args.tile.split(",") if value.strip()] or ["auto"]
    backends = [value.strip() for value in args.backend.split(",") if value.strip()] or ["pytorch"]
    variants = [f"{precision}/{tile}//{backend}" for backend in backends for tile in tiles
                for precision in precisions]  # precision/tile/allocator/backend
    variants += [f"{precision}/{tile}/glibc/{backend}" for backend in backends for tile in tiles
                 for precision in precisions] if args.allocator == "both" else []

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env = {**os.environ, CACHE_ENV: str(root / "cache")}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        weights = args.weights
        if args.preset:
            torch.manual_seed(0)
            config = PRESETS[args.preset]
            prompts = PromptBank(FIVE_TASK, tuple(DEGRADATIONS[n].text for n in FIVE_TASK),
                                 random_codes(FIVE_TASK, 0, config.text_dim), "random")
            weights = str(save_checkpoint(root / "weights", DFPIR(config).eval(), prompts, {"preset": args.preset}))
        photo = root / "photo.png"
        Image.fromarray(synthetic_photo(width, height)).save(photo, compress_level=1)
        options = ["-d", args.degradation, "--device", args.device]
        options += ["-w", weights] if weights else []
        for flag, value in (("--tile-overlap", args.overlap), ("--batch-size", args.batch_size)):
            options += [flag, str(value)] if value is not None else []

        if "auto" in precisions:  # the one-off bf16 check of these weights, outside the timed runs
            small = root / "small.png"
            Image.fromarray(synthetic_photo(64, 64)).save(small)
            _, seconds, _ = run_restore([str(small), *options, "-o", str(root / "warm")], env)
            print(f"auto's one-off bf16 check of these weights (plus a 64x64 restore): {seconds:.1f} s")
        if "onnxruntime" in backends:  # the one-off export of these weights, outside the timed runs
            small = root / "small.png"
            Image.fromarray(synthetic_photo(64, 64)).save(small)
            _, seconds, _ = run_restore([str(small), *options, "--backend", "onnxruntime", "-o", str(root / "warm")], env)
            print(f"--backend onnxruntime's one-off export of these weights (plus a 64x64 restore): {seconds:.1f} s")

        results: dict[str, list[tuple[dict, float, float]]] = {variant: [] for variant in variants}
        for _ in range(args.rounds):
            for variant in variants:
                precision, tile, allocator, backend = variant.split("/")
                output = root / f"out-{variant.replace('/', '-')}"
                tiling = [] if tile == "auto" else ["--tile", tile]
                arguments = [str(photo), *options, *tiling, "--precision", precision, "--backend", backend]
                results[variant].append(run_restore([*arguments, "-o", str(output)],
                                                    {**env, KEEP_FREED_ENV: "0"} if allocator else env))
        agreement = {variant: psnr(root / f"out-{variants[0].replace('/', '-')}" / "photo.png",
                                   root / f"out-{variant.replace('/', '-')}" / "photo.png")
                     for variant in variants}

    megapixels = width * height / 1e6
    first = results[variants[0]][0][0]
    described = f"random {args.preset} preset" if args.preset else weights or "the default model"
    print(f"{width}x{height} = {megapixels:.1f} MP, weights: {described}, -d {args.degradation}, "
          f"{args.device}, tile {tile_of(first, args.degradation)}, {args.rounds} round(s) per variant, "
          f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs")
    tile = tile_of(first, args.degradation)
    if tile:
        overlap = args.overlap if args.overlap is not None else DEFAULT_OVERLAP
        computed = computed_pixels(height, width, tile, overlap)
        print(f"tiling ({variants[0]}): {count_tiles(height, width, tile, overlap)} tiles of "
              f"{'x'.join(map(str, tile_shape(height, width, tile, overlap, DFPIR.multiple_of)))} px, "
              f"{computed / (width * height):.3f}x the photo's pixels computed")
    times = {variant: statistics.median(run[0]["seconds"] for run in runs) for variant, runs in results.items()}
    for variant, runs in results.items():
        summary = runs[-1][0]
        seconds = times[variant]
        each = ", ".join(f"{run[0]['seconds']:.1f}" for run in runs)
        precision, tile, allocator, backend = variant.split("/")
        ran_tile = tile_of(summary, args.degradation)
        guided = summary["haze_guide"] and family_of(args.degradation) == "haze"
        print(f"--backend {backend} --precision {precision:>4} --tile {tile} "
              f"(ran {summary['precision']}, {ran_tile or 'whole'} px"
              f"{', haze guide ' + str(summary['haze_guide']) if guided else ''})"
              f"{' (glibc allocator as is)' if allocator else ''}: restore {seconds:.1f} s median "
              f"({each}), {megapixels / seconds:.3f} MP/s, "
              f"peak RSS {max(run[2] for run in runs):.0f} MiB; speed-up vs {variants[0]}: "
              f"{times[variants[0]] / seconds:.2f}x; output {agreement[variant]:.1f} dB PSNR from {variants[0]}'s")
    for note in {note for runs in results.values() for run in runs for note in run[0]["notes"]}:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
