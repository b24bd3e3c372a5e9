"""The clean photos the library degrades on purpose, shared by the benchmark and the precision check.

``dfpir eval --dataset synthetic`` (:func:`dfpir_cli.data.test_sets.synthetic_sets`) and ``--precision auto``
(:mod:`dfpir_cli.restore.precision_check`) both degrade the photos that ship inside scikit-image's wheel, each
with a generator seeded by the seed, the degradation and the photo's index, so neither needs the other.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

from ..base.imageio import LoadedImage
from ..errors import DatasetError

# Clean colour photos shipped inside scikit-image's wheel (skimage/data/), so they load with no network.
SHIPPED_PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png",  # 512x512, portrait (NASA)
    "coffee": "coffee.png",  # 400x600, a cup of coffee
    "chelsea": "chelsea.png",  # 300x451, a cat
    "rocket": "rocket.jpg",  # 427x640, a launch pad outdoors
    "motorcycle": "motorcycle_left.png",  # 500x741, the left view of the Middlebury stereo pair
}
SYNTHETIC_SIZE = 256  # side of the square each synthetic-benchmark photo is scaled and cropped to


def shipped_photos() -> list[Path]:
    """Paths of :data:`SHIPPED_PHOTOS` in the installed scikit-image; a clear error if any is absent."""
    import skimage.data

    folder = Path(getattr(skimage.data, "data_dir", Path(skimage.data.__file__).parent))
    paths = [folder / filename for filename in SHIPPED_PHOTOS.values()]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"the photos {', '.join(missing)} are not in scikit-image's data folder {folder}; "
                           "reinstall scikit-image, or pass --images DIR with clean photos of your own")
    return paths


def float_pixels(image: LoadedImage) -> np.ndarray:
    """H x W x 3 float32 in [0, 1] of a decoded image."""
    return np.ascontiguousarray(image.pixels.permute(1, 2, 0).numpy(), dtype=np.float32)


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Scale (area) so the shorter side is ``size``, then centre-crop to ``size`` x ``size``."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    if scale != 1.0:
        image = cv2.resize(image, (max(size, round(width * scale)), max(size, round(height * scale))),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def synthetic_rng(seed: int, degradation: str, index: int) -> np.random.Generator:
    """The generator that degrades photo ``index`` of the synthetic benchmark: fixed by seed, name and index."""
    return np.random.default_rng([seed, zlib.crc32(degradation.encode()), index])
