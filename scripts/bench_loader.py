"""Data-loading throughput of training: patches/s of the real DataLoader, by worker count and start method.

`dfpir train` spawns its data-loading workers (issue 14: forked workers inherited a locked OpenCV thread
pool and hung). This measures what that costs against fork, in one run: for each variant it builds the
DataLoader `dfpir train` builds (PatchDataset of --photos, the global batch sampler, `_worker_init`) and
times the first batch (worker start-up) and the next --batches batches. The parent never touches OpenCV's
thread pool before a fork variant, so fork does not hang here; in `dfpir train` it did.

    .venv/bin/python scripts/bench_loader.py --photos /path/to/clean/photos
    .venv/bin/python scripts/bench_loader.py --photos DIR --variants 0,spawn:2,fork:2 --patch-size 128
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

from torch.utils.data import DataLoader

from dfpir_cli.data.train_sets import GlobalBatchSampler, PatchDataset, build_training_data
from dfpir_cli.train.loop import _worker_init
from dfpir_cli.weights.prompts import FIVE_TASK


def measure(dataset: PatchDataset, variant: str, batch_size: int, batches: int) -> tuple[float, float]:
    """(seconds to the first batch, patches/s over ``batches`` once every worker runs) for "0" or "METHOD:N"."""
    method, _, count = variant.partition(":")
    workers = int(count or 0)
    warm = max(1, 2 * workers)  # every worker has delivered (started) before the clock runs
    sampler = GlobalBatchSampler(len(dataset), batch_size, 0, 1, seed=0, phase=0, start_step=0,
                                 steps=batches + warm)
    options = {} if workers == 0 else {"multiprocessing_context": multiprocessing.get_context(method),
                                       "worker_init_fn": _worker_init}
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, **options)
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    for _ in range(warm - 1):
        next(iterator)
    start = time.perf_counter()
    for _ in iterator:
        pass
    return first, batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="a folder of clean photos")
    parser.add_argument("--variants", default="0,fork:2,spawn:2", help="0 (in-process) or METHOD:WORKERS, comma-separated")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40, help="timed batches after the first")
    parser.add_argument("--synthesis", default="realistic", choices=("classic", "realistic"))
    args = parser.parse_args()

    data = build_training_data(FIVE_TASK, clean_dir=args.photos, patch_size=args.patch_size, val_per_task=0)
    dataset = PatchDataset(data.train, FIVE_TASK, args.patch_size, seed=0, phase=0, synthesis=args.synthesis)
    print(f"{len(dataset)} training items from {args.photos}, {args.patch_size} px patches, batch {args.batch_size}, "
          f"{args.synthesis} synthesis, {args.batches} timed batches")
    print(f"{'variant':<10} {'first batch':>12} {'patches/s':>10}")
    for variant in args.variants.split(","):
        first, speed = measure(dataset, variant.strip(), args.batch_size, args.batches)
        print(f"{variant:<10} {first:>10.2f} s {speed:>10.1f}")


if __name__ == "__main__":  # spawned workers import this module again
    main()
