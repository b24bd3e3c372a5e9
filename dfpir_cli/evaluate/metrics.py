"""PSNR and SSIM with every convention explicit, defaulting to the paper's protocol (DESIGN.md section 5).

The paper scores full-RGB float images in [0, 1] with scikit-image: ``peak_signal_noise_ratio(data_range=1)``
and ``structural_similarity(data_range=1, channel_axis=-1)`` (a uniform 7 x 7 window, sample covariance),
after centre-cropping both images to a multiple of 16. Other papers use other conventions, and their
numbers differ by up to a dB: :class:`MetricOptions` names each one so a report can say what it used.

- ``y_channel``: score the luma (ITU-R BT.601 Y as MATLAB's ``rgb2ycbcr``, range [16, 235]/255) instead
  of RGB, as most super-resolution and deraining papers do.
- ``ssim_gaussian``: the SSIM of Wang et al. (2004): 11 x 11 Gaussian weights of sigma 1.5 and
  population covariance, instead of scikit-image's default uniform 7 x 7 window.
- ``crop_border``: ignore this many pixels at every border (after the centre crop).
- ``quantize``: round the restored image to 8 bits before scoring, as scoring saved PNGs would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..errors import InputError

CROP_MULTIPLE = 16  # the paper centre-crops test images to a multiple of 16


@dataclass(frozen=True)
class MetricOptions:
    y_channel: bool = False  # score BT.601 luma instead of full RGB
    ssim_gaussian: bool = False  # Wang et al. SSIM (Gaussian sigma 1.5, population covariance) instead of uniform 7x7
    crop_border: int = 0  # pixels ignored at each border, after the centre crop
    crop_multiple: int = CROP_MULTIPLE  # centre-crop both images to a multiple of this (1: no crop)
    quantize: bool = False  # round the restored image to 8 bits before scoring

    def __post_init__(self) -> None:
        if self.crop_border < 0:
            raise InputError(f"--crop-border must be 0 or more, not {self.crop_border}")
        if self.crop_multiple < 1:
            raise InputError(f"the crop multiple must be at least 1, not {self.crop_multiple}")

    def describe(self) -> str:
        """One line a report can print, so a reader knows which numbers these are."""
        channel = "Y channel (BT.601)" if self.y_channel else "full RGB"
        window = ("Gaussian SSIM (sigma 1.5, population covariance)" if self.ssim_gaussian
                  else "uniform 7x7 SSIM (scikit-image default)")
        parts = [f"{channel} in [0, 1]", "scikit-image PSNR", window,
                 f"centre crop to a multiple of {self.crop_multiple}" if self.crop_multiple > 1 else "no centre crop"]
        if self.crop_border:
            parts.append(f"{self.crop_border} px border ignored")
        parts.append("restored image rounded to 8 bits" if self.quantize else "restored image clipped to [0, 1], "
                                                                                "not rounded")
        return "; ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {"y_channel": self.y_channel, "ssim_gaussian": self.ssim_gaussian, "crop_border": self.crop_border,
                "crop_multiple": self.crop_multiple, "quantize": self.quantize, "description": self.describe()}


PAPER = MetricOptions()


def centre_crop(image: np.ndarray, multiple: int = CROP_MULTIPLE) -> np.ndarray:
    """Crop H and W down to a multiple of ``multiple``, keeping the centre (the reference's ``crop_img``).

    An odd remainder leaves the extra pixel at the bottom/right, as ``remainder // 2`` at the top does.
    """
    height, width = image.shape[:2]
    if height < multiple or width < multiple:
        raise InputError(f"image of {height}x{width} px is smaller than the {multiple} px the protocol crops to")
    crop_h, crop_w = height % multiple, width % multiple
    top, left = crop_h // 2, crop_w // 2
    return image[top:top + height - crop_h, left:left + width - crop_w]


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image in [0, 1], in [16/255, 235/255] (MATLAB ``rgb2ycbcr``'s Y / 255)."""
    weights = np.array([65.481, 128.553, 24.966], dtype=np.float64)
    return (16.0 + image.astype(np.float64) @ weights) / 255.0


def prepare_pair(restored: np.ndarray, target: np.ndarray,
                 options: MetricOptions = PAPER) -> tuple[np.ndarray, np.ndarray]:
    """Apply the options' conventions (clip, rounding, luma, border) to an already-cropped pair."""
    if restored.shape != target.shape:
        raise InputError(f"restored image is {restored.shape[1]}x{restored.shape[0]} but the target is "
                         f"{target.shape[1]}x{target.shape[0]}: they must have the same size")
    restored = np.clip(restored, 0.0, 1.0)
    target = np.clip(target, 0.0, 1.0)
    if options.quantize:
        restored = np.round(restored * 255.0) / 255.0
    if options.y_channel:
        restored, target = rgb_to_y(restored), rgb_to_y(target)
    border = options.crop_border
    if border:
        if 2 * border >= min(target.shape[:2]):
            raise InputError(f"--crop-border {border} leaves nothing of a {target.shape[1]}x{target.shape[0]} image")
        restored, target = restored[border:-border, border:-border], target[border:-border, border:-border]
    return restored, target


def psnr(restored: np.ndarray, target: np.ndarray, options: MetricOptions = PAPER) -> float:
    """PSNR in dB of a restored H x W x 3 float image in [0, 1] against its target (already cropped)."""
    restored, target = prepare_pair(restored, target, options)
    return float(peak_signal_noise_ratio(target, restored, data_range=1.0))


def ssim(restored: np.ndarray, target: np.ndarray, options: MetricOptions = PAPER) -> float:
    """SSIM of a restored H x W x 3 float image in [0, 1] against its target (already cropped)."""
    restored, target = prepare_pair(restored, target, options)
    return _ssim(restored, target, options)


def _ssim(restored: np.ndarray, target: np.ndarray, options: MetricOptions) -> float:
    channel_axis = -1 if restored.ndim == 3 else None
    if options.ssim_gaussian:
        return float(structural_similarity(target, restored, data_range=1.0, channel_axis=channel_axis,
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False))
    return float(structural_similarity(target, restored, data_range=1.0, channel_axis=channel_axis))


def score(restored: np.ndarray, target: np.ndarray, options: MetricOptions = PAPER) -> tuple[float, float]:
    """(PSNR, SSIM) of an already-cropped pair under ``options``, preparing the pair once."""
    restored, target = prepare_pair(restored, target, options)
    return float(peak_signal_noise_ratio(target, restored, data_range=1.0)), _ssim(restored, target, options)
