"""Write the shipped example degraded images in examples/ (one folder per degradation, named by its alias).

    .venv/bin/python scripts/make_examples.py            # rewrites examples/<alias>/<photo>.png

Each example is a photo the default model never trained on (the held-out photos of
``dfpir eval --dataset synthetic``, shipped with scikit-image: see scripts/train_default_model.py),
scaled (area) so its longer side is 384 px and degraded by dfpir_cli.data.synthesis with a fixed seed, so
the files are reproducible byte for byte on one platform. The folder names are degradation aliases, so
``dfpir restore examples/hazy --degradation hazy`` restores one family.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from dfpir_cli.data.photos import SHIPPED_PHOTOS
from dfpir_cli.data.synthesis import synthesize

ROOT = Path(__file__).resolve().parent.parent
LONG_SIDE = 384
SEED = 2025
# alias (folder) -> (canonical degradation, held-out photo from dfpir_cli.data.photos.SHIPPED_PHOTOS)
EXAMPLES: dict[str, tuple[str, str]] = {
    "noisy": ("noise25", "chelsea"),
    "rainy": ("rain", "motorcycle"),
    "hazy": ("haze", "rocket"),
    "blurry": ("blur", "astronaut"),
    "dark": ("lowlight", "coffee"),
}


def load_photo(name: str) -> np.ndarray:
    """A held-out photo as float32 RGB in [0, 1], longer side scaled to :data:`LONG_SIDE`."""
    bgr = cv2.imread(str(Path(skimage.data.data_dir) / SHIPPED_PHOTOS[name]), cv2.IMREAD_COLOR)
    height, width = bgr.shape[:2]
    scale = LONG_SIDE / max(height, width)
    size = (round(width * scale), round(height * scale))
    bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return np.ascontiguousarray(bgr[..., ::-1], dtype=np.float32) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "examples")
    parser.add_argument("--clean", action="store_true", help="also write the clean photos (clean/<photo>.png)")
    args = parser.parse_args()
    for alias, (degradation, photo) in EXAMPLES.items():
        clean = load_photo(photo)
        rng = np.random.default_rng([SEED, zlib.crc32(degradation.encode())])
        degraded = synthesize(clean, degradation, rng)
        folder = args.output / alias
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{photo}.png"
        pixels = (np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]
        cv2.imwrite(str(path), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {degradation} on {photo}, "
              f"{degraded.shape[1]}x{degraded.shape[0]}, {path.stat().st_size // 1024} KiB")
        if args.clean:
            (args.output / "clean").mkdir(exist_ok=True)
            cv2.imwrite(str(args.output / "clean" / f"{photo}.png"), (clean * 255 + 0.5).astype(np.uint8)[..., ::-1])


if __name__ == "__main__":
    main()
