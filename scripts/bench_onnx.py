"""One tile through PyTorch (fp32, and bf16 autocast as `dfpir restore --precision auto` runs it on a bf16 CPU)
and through ONNX Runtime (the file `dfpir export` writes), interleaved in one process; medians and PSNRs.

    .venv/bin/python scripts/bench_onnx.py                          # the default model, haze, a 456x480 tile
    .venv/bin/python scripts/bench_onnx.py --weights ckpt/ -d noise25 --size 512x512 --rounds 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from dfpir_cli.weights.export import INPUT_NAME, baked, export_onnx
from dfpir_cli.weights.resolve import resolve_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped default model)")
    parser.add_argument("--degradation", "-d", default="haze")
    parser.add_argument("--size", default="456x480", help="HEIGHTxWIDTH of the tile (default: a 12 MP photo's tile)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds after the first (a first timed round "
                                                               "of PyTorch fp32 once took 40x the next ones)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    height, width = (int(value) for value in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    checkpoint = resolve_weights(args.weights)
    network = baked(checkpoint, args.degradation)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(checkpoint, args.degradation, Path(folder) / "model.onnx").path
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        # Its threads would otherwise spin after each run, taking the cores from the PyTorch variant timed next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def pytorch(dtype: torch.dtype) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not torch.float32):
                return network(image).float().numpy()
        return run

    variants = {"PyTorch fp32": pytorch(torch.float32), "PyTorch bf16 autocast": pytorch(torch.bfloat16),
                "ONNX Runtime fp32": lambda: session.run(None, {INPUT_NAME: image.numpy()})[0]}
    outputs = {name: run() for name, run in variants.items()}  # warm-up, and the outputs compared
    for _ in range(args.warmup):
        for run in variants.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["PyTorch fp32"])
    print(f"{height}x{width} tile, -d {args.degradation}, {args.threads} threads, {args.rounds} rounds interleaved")
    for name, values in times.items():
        error = float(np.mean((outputs[name].astype(np.float64) - outputs["PyTorch fp32"]) ** 2))
        psnr = math.inf if error == 0 else 10 * math.log10(1 / error)
        median = statistics.median(values)
        print(f"{name:>22}: median {median:.2f} s ({', '.join(f'{v:.2f}' for v in values)}), {base / median:.2f}x "
              f"PyTorch fp32, output {psnr:.1f} dB from it")


if __name__ == "__main__":
    main()
