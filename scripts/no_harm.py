"""Do no harm: restore *clean* real photos with every prompt and measure how much each prompt changes them.

A restorer told "remove the rain" from a photo without rain should give it back nearly unchanged. For each
prompt of the checkpoint this prints, over clean photos it never trained on (the clean targets of the real
test splits: CBSD68, LOL high, SOTS targets), the PSNR of the restoration against the photo itself, the
largest shift of a channel's mean (colour cast, on the 0-255 scale) and the ratio of standard deviations
(global contrast: 1 is unchanged).

    .venv/bin/python scripts/no_harm.py                          # the embedded default model
    .venv/bin/python scripts/no_harm.py --weights DIR --count 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from dfpir_cli.base.imageio import read_image
from dfpir_cli.evaluate.benchmark import EvalOptions, restore_array
from dfpir_cli.evaluate.metrics import PAPER, centre_crop, score
from dfpir_cli.restore.plan import haze_guide_for
from dfpir_cli.weights.resolve import resolve_weights

REALSETS = Path(__file__).resolve().parents[2] / "shared" / "realsets"
CLEAN_FOLDERS = ("CBSD68", "LOL/high", "SOTS/target")  # clean photos; Rain100L targets are BSD photos like CBSD68


def clean_photos(root: Path, count: int) -> list[Path]:
    photos = []
    for folder in CLEAN_FOLDERS:
        found = sorted(p for p in (root / folder).glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        photos += found[:count]
    if not photos:
        raise SystemExit(f"no clean photos under {root} ({', '.join(CLEAN_FOLDERS)}): pass --realsets")
    return photos


def measure(weights: str | None, photos: list[Path], haze_guide: int | None = None) -> list[dict[str, object]]:
    checkpoint = resolve_weights(weights, "cpu")
    checkpoint.model.eval()
    images = [centre_crop(np.ascontiguousarray(read_image(p).pixels.permute(1, 2, 0).numpy()), PAPER.crop_multiple)
              for p in photos]
    options = EvalOptions(tile=0, haze_guide=haze_guide_for(checkpoint, haze_guide))  # as `dfpir restore` runs
    rows = []
    for prompt in checkpoint.prompts.names:
        psnrs, casts, contrasts = [], [], []
        for image in images:
            with torch.inference_mode():
                restored = restore_array(checkpoint, image, prompt, options, torch.device("cpu"))
            psnrs.append(score(restored, image, PAPER)[0])
            casts.append(float(np.abs(restored.mean(axis=(0, 1)) - image.mean(axis=(0, 1))).max()) * 255)
            contrasts.append(float(restored.std() / max(image.std(), 1e-6)))
        rows.append({"prompt": prompt, "photos": len(images), "psnr": float(np.mean(psnrs)),
                     "worst_psnr": float(np.min(psnrs)), "colour_shift": float(np.mean(casts)),
                     "contrast": float(np.mean(contrasts))})
    return rows


def render(rows: list[dict[str, object]], title: str) -> Table:
    table = Table(title=title)
    for column in ("prompt", "photos", "PSNR vs clean (mean)", "worst", "colour shift (0-255)", "contrast ratio"):
        table.add_column(column, justify="left" if column == "prompt" else "right")
    for row in rows:
        table.add_row(str(row["prompt"]), str(row["photos"]), f"{row['psnr']:.2f}", f"{row['worst_psnr']:.2f}",
                      f"{row['colour_shift']:.2f}", f"{row['contrast']:.3f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="checkpoint (default: the embedded default model)")
    parser.add_argument("--realsets", type=Path, default=REALSETS, help="the real test splits' folder")
    parser.add_argument("--count", type=int, default=4, help="photos taken from each clean folder")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--haze-guide", type=int, help="haze passes' thumbnail side, as `dfpir restore --haze-guide` "
                                                         "(0: off; default: the checkpoint's own, as restore)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs/default-model.md)")
    args = parser.parse_args()
    photos = clean_photos(args.realsets, args.count)
    rows = measure(args.weights, photos, args.haze_guide)
    if args.markdown:
        print("| prompt | PSNR vs clean (mean) | worst | colour shift (0-255) | contrast ratio |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['prompt']} | {row['psnr']:.2f} | {row['worst_psnr']:.2f} | {row['colour_shift']:.2f} "
                  f"| {row['contrast']:.3f} |")
    else:
        Console().print(render(rows, f"do no harm: {len(photos)} clean real photos restored with each prompt"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
