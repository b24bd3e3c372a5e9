"""Benchmark one forward pass of the DFPIR network against a large matmul timed in the same process.

Speed on a shared machine swings with its load, so the figure to compare is the *ratio*: achieved GFLOP/s
of the forward pass (median of --runs) over the GFLOP/s of a 4096x4096 float32 matmul (best of several,
timed before and after the forward passes), both measured in this run (DESIGN.md section 6). FLOPs are
counted once with ``torch.utils.flop_counter`` on the model as it runs: the optimised paper model counts
~318 GFLOP at 256x256 where the reference formulation counts 331 (folded projections, row-band halos).

    .venv/bin/python scripts/bench_forward.py                         # paper preset, 256x256, CPU fp32
    .venv/bin/python scripts/bench_forward.py --preset small --size 128 --runs 3
    .venv/bin/python scripts/bench_forward.py --precision fp32,bf16    # CPU bf16 autocast vs fp32, one run
    .venv/bin/python scripts/bench_forward.py --precision bf16 --band-mib 30,100000   # row bands on/off
    .venv/bin/python scripts/bench_forward.py --device cuda --precision bf16 --batch 4 --compile
    .venv/bin/python scripts/bench_forward.py --profile 25            # top ops by self CPU time
    .venv/bin/python scripts/bench_forward.py --preset small --size 512 --precision bf16 --breakdown
                                                                      # where the time goes, by kind of work
"""

from __future__ import annotations

import argparse
import contextlib
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from dfpir_cli.model import DFPIR, PRESETS, restormer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def matmul_gflops(device: torch.device, repeats: int, dtype: torch.dtype = torch.float32, size: int = 4096) -> float:
    """Best-of-``repeats`` GFLOP/s of a square matmul: the machine's practical peak in ``dtype`` right now."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up
    best = min(timed(lambda: torch.matmul(a, b, out=out), device) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def count_flops(model: torch.nn.Module, image: torch.Tensor, code: torch.Tensor,
                autocast: Callable[[], contextlib.AbstractContextManager]) -> int:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), autocast(), counter:
        model(image, code)
    return counter.get_total_flops()


@contextlib.contextmanager
def no_autocast() -> Iterator[None]:
    yield


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS); it includes the matmul operands (3 x 64 MiB).
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def parse_list(text: str, allowed: Iterable[str] | None = None) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if allowed is not None and any(item not in allowed for item in items):
        raise SystemExit(f"choose from {', '.join(allowed)}, not {text!r}")
    return items


GEMM_KINDS = ("1x1 convolutions", "matrix products", "3x3 convolutions")  # the work that runs near the matmul peak
CONVOLUTIONS = ("mkldnn_convolution", "_slow_conv2d_forward", "thnn_conv2d")  # the kernels, whose FLOPs count
CONVOLUTION_WRAPPERS = ("_convolution", "convolution", "conv2d")  # their callers (little self time)


def kind_of(name: str, shapes: list) -> str:
    """The kind of work a profiled aten op is, from its name and input shapes."""
    name = name.removeprefix("aten::")
    if name in CONVOLUTIONS + CONVOLUTION_WRAPPERS:
        weight = shapes[1] if len(shapes) > 1 else []
        if len(weight) == 4 and weight[2:] == [1, 1]:
            return "1x1 convolutions"
        return "depthwise 3x3 convolutions" if len(weight) == 4 and weight[1] == 1 else "3x3 convolutions"
    if name in ("addmm", "mm", "bmm", "baddbmm"):
        return "matrix products"
    if name in ("native_layer_norm", "layer_norm", "var", "rsqrt"):
        return "LayerNorm"
    if name in ("gelu", "gelu_", "mul_"):
        return "GELU gate"
    if name in ("copy_", "cat", "clone", "contiguous", "_to_copy", "to"):
        return "copies, casts, concatenations"
    if name in ("topk", "softmax", "_softmax", "scatter_", "pow", "sum", "sqrt", "div", "clamp_min", "add", "mul"):
        return "attention maps, sums, elementwise"
    return "other"


def flops_of(name: str, shapes: list) -> float:
    """FLOPs of one call of a convolution or matrix product (0 for other ops), from its input shapes."""
    name = name.removeprefix("aten::")
    if name in CONVOLUTIONS and len(shapes) > 1 and len(shapes[0]) == 4 and len(shapes[1]) == 4:
        (batch, _, height, width), (out_channels, in_per_group, kernel_h, kernel_w) = shapes[0], shapes[1]
        return 2.0 * batch * out_channels * in_per_group * kernel_h * kernel_w * height * width
    if name in ("addmm", "mm") and len(shapes) >= 2:
        first, second = (shapes[1], shapes[2]) if name == "addmm" else (shapes[0], shapes[1])
        return 2.0 * first[0] * first[1] * second[1] if len(first) == 2 and len(second) == 2 else 0.0
    if name in ("bmm", "baddbmm") and len(shapes) >= 2:
        first, second = (shapes[1], shapes[2]) if name == "baddbmm" else (shapes[0], shapes[1])
        return 2.0 * first[0] * first[1] * first[2] * second[2] if len(first) == 3 and len(second) == 3 else 0.0
    return 0.0


def print_breakdown(events, peak: float, precision: str) -> None:
    """One pass's self CPU time by :func:`kind_of`, with GFLOP/s where the work is counted in FLOPs."""
    seconds: dict[str, float] = {}
    flops: dict[str, float] = {}
    for event in events:
        if not event.key.startswith("aten::"):
            continue
        kind = kind_of(event.key, event.input_shapes)
        seconds[kind] = seconds.get(kind, 0.0) + event.self_cpu_time_total / 1e6
        flops[kind] = flops.get(kind, 0.0) + flops_of(event.key, event.input_shapes) * event.count
    total = sum(seconds.values())
    print(f"\nwhere one pass's {total:.2f} s go (self CPU time, {precision}; {precision} matmul peak {peak:.0f} GFLOP/s):")
    print(f"{'kind of work':>34} {'seconds':>8} {'share':>6} {'GFLOP':>7} {'GFLOP/s':>8} {'of peak':>8}")
    for kind, spent in sorted(seconds.items(), key=lambda item: -item[1]):
        rate = flops[kind] / spent / 1e9 if flops[kind] and spent else 0.0
        print(f"{kind:>34} {spent:8.3f} {spent / total:6.1%} {flops[kind] / 1e9:7.1f} "
              + (f"{rate:8.1f} {rate / peak:8.1%}" if rate else f"{'-':>8} {'-':>8}"))
    gemm = sum(seconds.get(kind, 0.0) for kind in GEMM_KINDS)
    gemm_flops = sum(flops.get(kind, 0.0) for kind in GEMM_KINDS)
    if not gemm or not gemm_flops:
        print("no GEMM-like work was counted in this pass: no bounds")
        return
    print(f"GEMM-like work (1x1 and 3x3 convolutions, matrix products): {gemm / total:.1%} of the time. Bounds: every "
          f"other kind free -> at most {total / gemm:.2f}x; that, and the GEMMs at the matmul peak -> at most "
          f"{total / (gemm_flops / peak / 1e9):.2f}x; the GEMMs alone at the peak -> "
          f"{total / (total - gemm + gemm_flops / peak / 1e9):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--size", type=int, default=256, help="square input side, a multiple of 8")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32",
                        help="fp32, bf16 or fp16 (autocast, weights stay fp32), or a comma list such as fp32,bf16: "
                             "the variants are timed in turn, round by round, and compared with the first")
    parser.add_argument("--band-mib", default="",
                        help="comma list of row-band sizes in MiB to compare (e.g. 30,100000: 100000 = no bands); "
                             "default: the model's own")
    parser.add_argument("--runs", type=int, default=5, help="timed forward passes per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--matmul-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 keeps the default")
    parser.add_argument("--channels-last", action="store_true", help="feed a channels-last input")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, profile one pass of the last variant and print the N ops with most "
                             "self time")
    parser.add_argument("--breakdown", action="store_true",
                        help="after timing, profile one pass of the last variant and print its time by kind of work "
                             "(1x1 convolutions, matrix products, depthwise convolutions, LayerNorm, ...) with "
                             "GFLOP/s, and what removing each kind could gain at most")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.breakdown and args.device != "cpu":
        parser.error("--breakdown profiles CPU time: use --profile on a GPU")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    config = PRESETS[args.preset]
    model = DFPIR(config).eval().to(device)
    image = torch.rand(args.batch, config.in_channels, args.size, args.size, device=device)
    if args.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    code = torch.randn(args.batch, config.text_dim, device=device)
    precisions = parse_list(args.precision, DTYPES)
    bands = [int(value) for value in parse_list(args.band_mib)] or [restormer.BAND_BYTES // 2**20]
    variants = [(precision, band) for precision in precisions for band in bands]

    def autocast(precision: str) -> contextlib.AbstractContextManager:
        dtype = DTYPES[precision]
        return no_autocast() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)

    flops = count_flops(model, image, code, lambda: autocast(precisions[0]))
    forward = torch.compile(model) if args.compile else model
    outputs: dict[tuple[str, int], torch.Tensor] = {}

    def run(variant: tuple[str, int]) -> None:
        restormer.BAND_BYTES = variant[1] * 2**20
        with torch.inference_mode(), autocast(variant[0]):
            outputs[variant] = forward(image, code)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        for variant in variants:
            run(variant)
    # The matmuls are timed before and after the forward passes and the best kept, so that a burst of load
    # from other processes during one of the two does not lower the yardstick.
    peaks = {name: matmul_gflops(device, args.matmul_runs, DTYPES[name]) for name in dict.fromkeys(["fp32", *precisions])}
    times: dict[tuple[str, int], list[float]] = {variant: [] for variant in variants}
    for _ in range(args.runs):  # round-robin: load from other processes hits every variant alike
        for variant in variants:
            times[variant].append(timed(lambda variant=variant: run(variant), device))
    for name in peaks:
        peaks[name] = max(peaks[name], matmul_gflops(device, args.matmul_runs, DTYPES[name]))

    print(f"preset {args.preset}, {args.batch}x{config.in_channels}x{args.size}x{args.size}, {device}, "
          f"threads {torch.get_num_threads()}, {flops / 1e9:.1f} GFLOP per pass (counted in {precisions[0]})")
    print("matmul 4096^2: " + ", ".join(f"{name} {value:.1f} GFLOP/s" for name, value in peaks.items()))
    first = statistics.median(times[variants[0]])
    reference = outputs[variants[0]].float()
    for variant in variants:
        precision, band = variant
        seconds = statistics.median(times[variant])
        achieved = flops / seconds / 1e9
        error = (outputs[variant].float() - reference).square().mean().item()
        agreement = "same" if error == 0 else f"{10 * math.log10(1 / error):.1f} dB from the first"
        print(f"{precision:>4}, bands {band:>6} MiB: median {seconds:.3f} s of {args.runs} "
              f"(min {min(times[variant]):.3f}, max {max(times[variant]):.3f}); {achieved:.1f} GFLOP/s = "
              f"{achieved / peaks['fp32']:.1%} of the fp32 matmul, {achieved / peaks[precision]:.1%} of the "
              f"{precision} one; speed-up vs the first {first / seconds:.2f}x; output {agreement}")
    memory = f"peak RSS {peak_rss_mib():.0f} MiB (the whole process: all variants and the matmul operands)"
    if device.type == "cuda":
        memory += f"; peak CUDA allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    print(memory)

    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profiler:
            run(variants[-1])
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(profiler.key_averages().table(sort_by=sort, row_limit=args.profile))
    if args.breakdown:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profiler:
            run(variants[-1])
        print_breakdown(profiler.key_averages(group_by_input_shape=True), peaks[variants[-1][0]], variants[-1][0])


if __name__ == "__main__":
    main()
