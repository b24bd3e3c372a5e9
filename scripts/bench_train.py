"""Training throughput of DFPIR: samples/s of full optimisation steps (forward, L1, backward, Adam).

Default: the paper preset at the paper's recipe, 128 px patches, batch 5, on the best device. The data are
random tensors, so this measures the network step, not image decoding. A 4096x4096 float32 matmul is
timed in the same process as a yardstick of how busy the machine is (DESIGN.md section 6).

    python scripts/bench_train.py                      # paper preset, 128 px, batch 5
    python scripts/bench_train.py --device cuda --precision bf16 --steps 20
    python scripts/bench_train.py --preset small --precision bf16   # CPU bf16 autocast (AVX512-BF16/AMX)
"""

from __future__ import annotations

import argparse
import time

import torch

from dfpir_cli.base.device import pick_device
from dfpir_cli.model import PRESETS
from dfpir_cli.train.trainer import Trainer
from dfpir_cli.weights.prompts import FIVE_TASK, random_codes


def matmul_gflops(device: torch.device, size: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"))
    args = parser.parse_args()

    device = pick_device(args.device)
    config = PRESETS[args.preset]
    codes = random_codes(FIVE_TASK, 0, config.text_dim)
    trainer = Trainer(config, codes, device=device, precision=args.precision)
    parameters = sum(p.numel() for p in trainer.model.parameters())
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(args.batch_size, 3, args.patch_size, args.patch_size, generator=generator)
    degraded = (clean + 0.1 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    tasks = torch.arange(args.batch_size) % len(FIVE_TASK)
    print(f"{args.preset} preset ({parameters:,} parameters), {args.patch_size} px, batch {args.batch_size}, "
          f"{device}, {args.precision}, {torch.get_num_threads()} CPU threads")
    yardstick_before = matmul_gflops(device)
    for _ in range(args.warmup):
        trainer.step(degraded, clean, tasks, 1e-4)
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.step(degraded, clean, tasks, 1e-4)  # reads the loss back: synchronised
        times.append(time.perf_counter() - start)
    yardstick_after = matmul_gflops(device)
    mean = sum(times) / len(times)
    print(f"step times (s): {', '.join(f'{t:.2f}' for t in times)}")
    print(f"training throughput: {args.batch_size / mean:.3f} samples/s ({mean:.2f} s/step, "
          f"best {args.batch_size / min(times):.3f} samples/s)")
    print(f"4096x4096 fp32 matmul: {yardstick_before:.0f} GFLOP/s before, {yardstick_after:.0f} GFLOP/s after "
          "(how busy the machine was)")


if __name__ == "__main__":
    main()
