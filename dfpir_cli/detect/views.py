"""What the detector looks at: native-resolution crops and a whole-image thumbnail of a photo."""

from __future__ import annotations

import cv2
import numpy as np

GRID = 3  # at inference, crops on a GRID x GRID lattice over the photo: the same crops every run


def _at_least(image: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad an H x W x 3 image whose sides are shorter than ``size`` (tiny photos)."""
    height, width = image.shape[:2]
    if height >= size and width >= size:
        return image
    bottom, right = max(0, size - height), max(0, size - width)
    return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_REFLECT_101 if min(height, width) > 1
                              else cv2.BORDER_REPLICATE)


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """The whole photo squeezed into ``size`` x ``size`` (area-averaged when shrinking)."""
    height, width = image.shape[:2]
    shrink = height >= size and width >= size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def grid_crops(image: np.ndarray, size: int, grid: int = GRID) -> np.ndarray:
    """(grid * grid, size, size, 3) crops at native resolution, evenly spread from corner to corner."""
    image = _at_least(image, size)
    height, width = image.shape[:2]
    tops = np.linspace(0, height - size, grid).round().astype(int)
    lefts = np.linspace(0, width - size, grid).round().astype(int)
    return np.stack([image[top:top + size, left:left + size] for top in tops for left in lefts])


def random_crops(image: np.ndarray, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, size, size, 3) crops at random places, as training sees photos."""
    image = _at_least(image, size)
    height, width = image.shape[:2]
    tops = rng.integers(0, height - size + 1, count)
    lefts = rng.integers(0, width - size + 1, count)
    return np.stack([image[top:top + size, left:left + size] for top, left in zip(tops, lefts, strict=True)])
