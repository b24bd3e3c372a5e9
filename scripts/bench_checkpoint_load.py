"""What checking a checkpoint costs at load: `load_checkpoint` with and without the recorded sha256, and its parts.

Saves one network (random weights, the paper preset by default: 31.1 M parameters, 124 MB in float32) twice in a
temporary folder: as `save_checkpoint` writes it (config.json records the sha256 of model.safetensors) and as a
folder from before that field (no sha256, so nothing to check). Then, in turns so both see the same page cache,
it times `load_checkpoint` on each --repeats times, and on their own the parts of a load: hashing the file,
reading the weights (`read_weights`: safetensors, then the scan for NaN/inf and non-float tensors) with and
without the hash, and building the network on the meta device for the shape check.

    .venv/bin/python scripts/bench_checkpoint_load.py
    .venv/bin/python scripts/bench_checkpoint_load.py --preset small --repeats 9 --dtype float16
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from dfpir_cli.model import DFPIR, PRESETS, DFPIRConfig
from dfpir_cli.weights.checkpoint import (
    WEIGHTS_SHA256,
    PromptBank,
    load_checkpoint,
    read_weights,
    save_checkpoint,
    sha256_of,
)
from dfpir_cli.weights.prompts import DEGRADATIONS, FIVE_TASK, random_codes


def meta_network(config: DFPIRConfig) -> DFPIR:
    with torch.device("meta"):
        return DFPIR(config)


def seconds(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="as stored on disk")
    args = parser.parse_args()

    config = PRESETS[args.preset]
    torch.manual_seed(0)
    model = DFPIR(config).eval()
    prompts = PromptBank(FIVE_TASK, tuple(DEGRADATIONS[name].text for name in FIVE_TASK),
                         random_codes(FIVE_TASK, 0, config.text_dim), "random")
    with tempfile.TemporaryDirectory() as root:
        checked = save_checkpoint(Path(root) / "checked", model, prompts, dtype=getattr(torch, args.dtype))
        unchecked = Path(shutil.copytree(checked, Path(root) / "unchecked"))
        settings = json.loads((unchecked / "config.json").read_text())
        del settings[WEIGHTS_SHA256]
        (unchecked / "config.json").write_text(json.dumps(settings, indent=2))
        weights = checked / "model.safetensors"
        megabytes = weights.stat().st_size / 1e6
        load_checkpoint(checked)  # warm the page cache and torch's allocator

        sha256 = sha256_of(weights)
        steps: dict[str, Callable[[], object]] = {
            "load_checkpoint, sha256 recorded": lambda: load_checkpoint(checked),
            "load_checkpoint, no sha256 (old)": lambda: load_checkpoint(unchecked),
            "  sha256 of model.safetensors": lambda: sha256_of(weights),
            "  safetensors load_file (mmap)": lambda: load_file(weights),
            "  read_weights, no sha256": lambda: read_weights(weights, None),
            "  read_weights, sha256 checked": lambda: read_weights(weights, sha256),
            "  network on the meta device": lambda: meta_network(config),
        }
        times: dict[str, list[float]] = {label: [] for label in steps}
        for _ in range(args.repeats):
            for label, step in steps.items():
                times[label].append(seconds(step))

    parameters = sum(parameter.numel() for parameter in model.parameters())
    print(f"{args.preset}: {parameters / 1e6:.1f} M parameters, model.safetensors {megabytes:.0f} MB "
          f"({args.dtype}), {torch.get_num_threads()} threads, {args.repeats} repeats")
    for label, values in times.items():
        print(f"{label:36s} median {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f})")


if __name__ == "__main__":
    main()
