"""GPU benchmark in one go: precisions, torch.compile, batches of tiles and a 12 MP restore, in one table.

For each preset (default: small and paper) it times a forward pass of 512x512 tiles in fp32, bf16 and
fp16 autocast, eager and ``torch.compile``d, at batches of 1 and 4 tiles (median of --runs after warm-up,
CUDA-synchronised), and reports megapixels per second, the speed-up over eager fp32 at batch 1, peak CUDA
memory and the output's PSNR against fp32. Then it restores a synthetic 4000x3000 photo through
:class:`dfpir_cli.restore.pipeline.Restorer` (the code `dfpir restore` runs) at each precision with the default tile
and batch for the GPU. A variant that fails (e.g. out of memory, no compiler) is reported and skipped.

    .venv/bin/python scripts/bench_gpu.py                       # everything, about 5-10 minutes
    .venv/bin/python scripts/bench_gpu.py --presets paper --no-compile --runs 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from dfpir_cli.base.precision import PRECISIONS, autocast
from dfpir_cli.model import DFPIR, PRESETS
from dfpir_cli.restore.pipeline import Restorer
from dfpir_cli.weights.checkpoint import Checkpoint, PromptBank
from dfpir_cli.weights.prompts import DEGRADATIONS, FIVE_TASK, random_codes


def timed(fn: Callable[[], object], device: torch.device) -> float:
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float().clamp(0, 1) - b.float().clamp(0, 1)).double().square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def forward_table(preset: str, device: torch.device, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    config = PRESETS[preset]
    model = DFPIR(config).eval().to(device)
    compiled = None
    print(f"\n{preset} preset ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"{args.tile}x{args.tile} tiles, {torch.cuda.get_device_name(device)}")
    print(f"{'precision':>9} {'mode':>8} {'batch':>5} {'median s':>9} {'MP/s':>8} {'speed-up':>8} {'peak MiB':>9} "
          f"{'dB vs fp32':>10}")
    baseline: float | None = None
    references: dict[int, torch.Tensor] = {}
    for batch in args.batches:
        image = torch.rand(batch, 3, args.tile, args.tile, device=device).contiguous(memory_format=torch.channels_last)
        code = torch.randn(batch, config.text_dim, device=device)
        for mode in ("eager", "compile") if args.compile else ("eager",):
            if mode == "compile" and compiled is None:
                compiled = torch.compile(model)
            network = compiled if mode == "compile" else model
            for name in args.precisions:
                dtype = PRECISIONS[name]
                try:
                    def run(network=network, dtype=dtype, image=image, code=code) -> torch.Tensor:
                        with torch.inference_mode(), autocast(device, dtype):
                            return network(image, code)

                    for _ in range(args.warmup):
                        run()
                    torch.cuda.reset_peak_memory_stats(device)
                    times = [timed(run, device) for _ in range(args.runs)]
                    output = run()
                except Exception as error:  # noqa: BLE001 - report and go on to the next variant
                    print(f"{name:>9} {mode:>8} {batch:>5}  failed: {type(error).__name__}: {str(error)[:120]}")
                    torch.cuda.empty_cache()
                    continue
                seconds = statistics.median(times)
                megapixels = batch * args.tile**2 / 1e6 / seconds
                if baseline is None:
                    baseline = seconds / batch
                if name == "fp32" and mode == "eager":
                    references[batch] = output.float()
                agreement = psnr(output, references[batch]) if batch in references else math.nan
                print(f"{name:>9} {mode:>8} {batch:>5} {seconds:>9.4f} {megapixels:>8.2f} "
                      f"{baseline / (seconds / batch):>7.2f}x {torch.cuda.max_memory_allocated(device) / 2**20:>9.0f} "
                      f"{agreement:>10.1f}")


def restore_table(preset: str, device: torch.device, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    config = PRESETS[preset]
    prompts = PromptBank(FIVE_TASK, tuple(DEGRADATIONS[n].text for n in FIVE_TASK),
                         random_codes(FIVE_TASK, 0, config.text_dim), "random")
    checkpoint = Checkpoint(DFPIR(config).eval(), prompts)
    width, height = 4000, 3000
    photo = torch.rand(3, height // 16, width // 16)
    photo = torch.nn.functional.interpolate(photo[None], size=(height, width), mode="bilinear")[0]
    print(f"\n{preset} preset: restore of a {width}x{height} photo (12 MP), Restorer as `dfpir restore`")
    reference = None
    for name in args.precisions:
        try:
            restorer = Restorer(checkpoint, prompts.code("haze"), device, name)
            restorer.restore(photo[:, :256, :256])  # warm-up
            torch.cuda.reset_peak_memory_stats(device)
            seconds = timed(lambda restorer=restorer: restorer.restore(photo), device)
            output = restorer.restore(photo)
        except Exception as error:  # noqa: BLE001
            print(f"  {name}: failed: {type(error).__name__}: {str(error)[:160]}")
            torch.cuda.empty_cache()
            continue
        reference = output if reference is None else reference
        print(f"  {name:>4}: {seconds:.2f} s, {width * height / 1e6 / seconds:.2f} MP/s, tile {restorer.planner.tile}, "
              f"batch {restorer.planner.batch_size}, peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB, "
              f"{psnr(output, reference):.1f} dB vs {args.precisions[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"], choices=sorted(PRESETS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=sorted(PRECISIONS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script benchmarks a GPU (scripts/bench_forward.py covers CPUs)")
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(device)}, "
          f"bf16 supported: {torch.cuda.is_bf16_supported()}")
    for preset in args.presets:
        forward_table(preset, device, args)
    for preset in args.presets:
        restore_table(preset, device, args)


if __name__ == "__main__":
    main()
