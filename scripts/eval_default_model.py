"""The default model's quality table: degraded input vs the model vs a classic method, per degradation.

    .venv/bin/python scripts/eval_default_model.py                  # the shipped default model
    .venv/bin/python scripts/eval_default_model.py --weights DIR --markdown --json out.json

Same benchmark and numbers as ``dfpir eval --dataset synthetic`` (the five held-out scikit-image photos,
256x256 crops, seed 0, the paper's scoring: full RGB, centre crop to a multiple of 16): it reuses eval's
loader, restorer and metrics, and adds the column eval has not got, a classic non-learned method per
degradation (:mod:`dfpir_cli.evaluate.classic`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from dfpir_cli.data.photos import SYNTHETIC_SIZE
from dfpir_cli.data.test_sets import synthetic_sets
from dfpir_cli.evaluate.benchmark import EvalOptions, PairLoader, restore_array
from dfpir_cli.evaluate.classic import classic_method, classic_restore
from dfpir_cli.evaluate.metrics import PAPER, score
from dfpir_cli.weights.prompts import FIVE_TASK
from dfpir_cli.weights.resolve import resolve_weights

COLUMNS = ("degraded", "model", "classic")


def evaluate(weights: str | None, degradations: list[str], seed: int, size: int) -> list[dict[str, object]]:
    checkpoint = resolve_weights(weights, "cpu")
    checkpoint.model.eval()
    device = torch.device("cpu")
    rows = []
    for test_set in synthetic_sets(degradations, None, seed, size):
        loader = PairLoader(test_set, PAPER.crop_multiple)
        scores: dict[str, list[tuple[float, float]]] = {column: [] for column in COLUMNS}
        seconds = {"model": 0.0, "classic": 0.0}
        for index in range(len(test_set.pairs)):
            degraded, clean = loader.load(index)
            started = time.perf_counter()
            with torch.inference_mode():
                restored = restore_array(checkpoint, degraded, test_set.degradation, EvalOptions(tile=0), device)
            seconds["model"] += time.perf_counter() - started
            started = time.perf_counter()
            baseline = classic_restore(degraded, test_set.degradation)
            seconds["classic"] += time.perf_counter() - started
            for column, image in zip(COLUMNS, (degraded, restored, baseline), strict=True):
                scores[column].append(score(image, clean, PAPER))
        row: dict[str, object] = {"degradation": test_set.degradation, "images": len(test_set.pairs),
                                  "classic_method": classic_method(test_set.degradation)}
        for column in COLUMNS:
            row[f"{column}_psnr"] = float(np.mean([s[0] for s in scores[column]]))
            row[f"{column}_ssim"] = float(np.mean([s[1] for s in scores[column]]))
        row.update({f"{name}_seconds": value / len(test_set.pairs) for name, value in seconds.items()})
        rows.append(row)
    return rows


def with_average(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    average: dict[str, object] = {"degradation": "average", "images": "", "classic_method": ""}
    for column in COLUMNS:
        for metric in ("psnr", "ssim"):
            key = f"{column}_{metric}"
            average[key] = float(np.mean([row[key] for row in rows]))
    return [*rows, average]


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| degradation | degraded input | default model | classic method | classic |",
             "|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row[f'{c}_psnr']:.2f} / {row[f'{c}_ssim']:.3f}" for c in COLUMNS]
        lines.append(f"| {row['degradation']} | {cells[0]} | {cells[1]} | {row['classic_method']} | {cells[2]} |")
    return "\n".join(lines)


def rich_table(rows: list[dict[str, object]], title: str) -> Table:
    table = Table(title=title, caption="PSNR dB / SSIM, full RGB, paper conventions")
    for column in ("degradation", "degraded", "model", "classic", "classic method", "model - classic PSNR"):
        table.add_column(column, justify="left" if column in ("degradation", "classic method") else "right")
    for row in rows:
        delta = row["model_psnr"] - row["classic_psnr"]
        colour = "green" if delta >= 0 else "red"
        table.add_row(str(row["degradation"]),
                      *(f"{row[f'{c}_psnr']:.2f} / {row[f'{c}_ssim']:.3f}" for c in COLUMNS),
                      str(row["classic_method"]), f"[{colour}]{delta:+.2f}[/]",
                      style="bold" if row["degradation"] == "average" else None)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped default model)")
    parser.add_argument("--degradation", action="append", help="repeatable; default: all seven of the 5-task set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=SYNTHETIC_SIZE)
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this JSON file")
    args = parser.parse_args()
    rows = with_average(evaluate(args.weights, args.degradation or list(FIVE_TASK), args.seed, args.size))
    console = Console()
    console.print(rich_table(rows, f"{args.weights or 'default model'} on the synthetic benchmark (seed {args.seed})"))
    if args.markdown:
        print(markdown(rows))
    if args.json is not None:
        args.json.write_text(json.dumps([{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                          for k, v in row.items()} for row in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
