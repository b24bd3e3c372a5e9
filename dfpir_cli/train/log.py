"""A run's logs, written by process 0: val.csv and train_log.csv (cut back to the last save on resume), and
TensorBoard when it is installed."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _trim_csv(path: Path, last_step: int) -> None:
    """Drop the rows a killed run wrote after its last save (they will be written again)."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) <= last_step]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)


class RunLog:
    """CSV (and TensorBoard, when installed) logs of process 0."""

    def __init__(self, output: Path, degradations: Sequence[str], start_step: int) -> None:
        self.degradations = list(degradations)
        self.val_path, self.train_path = output / "val.csv", output / "train_log.csv"
        for path, header in ((self.val_path, ["step", "phase", "mean_psnr", *self.degradations]),
                             (self.train_path, ["step", "phase", "loss", "lr", "samples_per_s", "skipped_steps"])):
            _trim_csv(path, start_step)
            if not path.is_file():
                with path.open("w", newline="") as handle:
                    csv.writer(handle).writerow(header)
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output / "tensorboard"), purge_step=start_step + 1)
        except ImportError:
            pass

    def _append(self, path: Path, row: list[Any]) -> None:
        with path.open("a", newline="") as handle:
            csv.writer(handle).writerow(row)

    def train(self, step: int, phase: int, loss: float, lr: float, speed: float, skipped: int) -> None:
        self._append(self.train_path, [step, phase, f"{loss:.6f}", f"{lr:.3e}", f"{speed:.2f}", skipped])
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/loss", loss, step)
            self.tensorboard.add_scalar("train/lr", lr, step)

    def val(self, step: int, phase: int, mean: float | None, psnr: dict[str, float | None]) -> None:
        def text(value: float | None) -> str:
            return "" if value is None else f"{value:.4f}"

        self._append(self.val_path, [step, phase, text(mean), *(text(psnr[name]) for name in self.degradations)])
        if self.tensorboard is not None:
            for name, value in psnr.items():
                if value is not None:
                    self.tensorboard.add_scalar(f"val_psnr/{name}", value, step)
            if mean is not None:
                self.tensorboard.add_scalar("val_psnr/mean", mean, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
