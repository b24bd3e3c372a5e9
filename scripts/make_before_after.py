"""Make the README's before/after picture: each family's example photo, degraded and restored by the default model.

    .venv/bin/python scripts/make_before_after.py            # writes docs/images/before_after.jpg

The photos are the shipped examples (examples/<alias>/, made by scripts/make_examples.py; photos the default
model never trained on), restored through the Python API as ``dfpir restore examples/<alias> -d <alias>``
restores them. Each column is one family: the degraded photo above, the restoration below, a centre square of
each scaled to --cell pixels. The JPEG stays well under 300 KB (checked).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dfpir_cli import DFPIRRestorer

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("noisy", "rainy", "hazy", "blurry", "dark")  # the folder names of examples/, as degradation aliases
LABEL_HEIGHT = 22
MAX_BYTES = 300 * 1024


def centre_square(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def cell(image: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(centre_square(image)).resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "images" / "before_after.jpg")
    parser.add_argument("--cell", type=int, default=200, help="side of each picture in the grid, in pixels")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    restorer = DFPIRRestorer(device=args.device)
    size, gap = args.cell, 4
    sheet = Image.new("RGB", (len(FAMILIES) * (size + gap) - gap, 2 * (size + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for column, family in enumerate(FAMILIES):
        path = next((ROOT / "examples" / family).glob("*.png"))
        before = np.asarray(Image.open(path).convert("RGB"))
        after = restorer.restore(before, family)
        left = column * (size + gap)
        for row, (image, caption) in enumerate(((before, f"{family} ({path.stem})"), (after, "restored"))):
            top = row * (size + LABEL_HEIGHT)
            draw.text((left + 4, top + 5), caption, fill="black")
            sheet.paste(cell(image, size), (left, top + LABEL_HEIGHT))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, quality=args.quality, optimize=True)
    written = args.output.stat().st_size
    if written > MAX_BYTES:
        raise SystemExit(f"{args.output} is {written / 1024:.0f} KB, over {MAX_BYTES // 1024} KB: lower --cell or --quality")
    print(f"wrote {args.output} ({sheet.width}x{sheet.height}, {written / 1024:.0f} KB)")  # noqa: T201 - a script


if __name__ == "__main__":
    main()
