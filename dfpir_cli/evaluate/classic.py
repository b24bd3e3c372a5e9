"""Classic, non-learned restorers: the yardstick the default model is measured against.

One textbook method per degradation family, from maintained packages (scikit-image, OpenCV) where one
exists, each with fixed, stated parameters and no knowledge the model would not have (the synthetic
degradation's true parameters are never used):

- noise (noise15/25/50): non-local means (Buades et al. 2005), :func:`skimage.restoration.denoise_nl_means`
  with ``h = 0.8 sigma``, 5x5 patches, 13x13 search window, as scikit-image's own example; ``sigma`` is
  estimated from the image (Donoho's median absolute deviation of the finest diagonal Haar wavelet
  coefficients, :func:`estimate_noise_sigma`: scikit-image's ``estimate_sigma`` does the same with a
  Daubechies wavelet but needs PyWavelets, which dfpir does not otherwise depend on). BM3D
  would be stronger, but its PyPI package is not open source (non-commercial licence), so it is not used.
- rain: a 5x5 median filter (:func:`cv2.medianBlur` per channel): thin bright streaks are outliers in
  the window. It also smooths fine texture.
- haze: the dark channel prior (He, Sun and Tang, CVPR 2009), written here in a few lines of numpy/OpenCV
  because no maintained package ships it: dark channel over 7x7 windows (the paper's 15x15 is for
  600x400 photos; 7x7 scored better on the training photos at dfpir's 256 px benchmark scale), airlight
  from the brightest
  0.1% of the dark channel, ``t = 1 - 0.95 dark(I / A)`` refined by a guided filter (He et al. 2010,
  radius 16, eps 1e-3, box filters), ``t >= 0.1``, ``J = (I - A) / t + A``.
- blur: Richardson-Lucy deconvolution (:func:`skimage.restoration.richardson_lucy`, 10 iterations) with
  a *generic* kernel, an isotropic Gaussian of sigma 1 px: the true motion kernel is unknown to a
  non-blind method and estimating it (blind deconvolution) is out of scope of a classic baseline. On
  motion blur it does not beat the blurred input (nor did Wiener filtering or wider kernels): that is the
  honest baseline for a method that does not know the kernel.
- lowlight: contrast-limited adaptive histogram equalisation, :func:`skimage.exposure.equalize_adapthist`
  (clip limit 0.01, on the V channel of HSV). A gamma chosen from the image (:func:`auto_gamma`) scored
  lower on the training photos.

The parameters above were chosen on the training photos of the default model, never on the held-out
benchmark photos.

All functions take and return float32 ``H x W x 3`` images in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from skimage.restoration import denoise_nl_means, richardson_lucy

from ..errors import InputError
from ..weights.prompts import DEGRADATIONS, resolve_degradation


def _check(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected an H x W x 3 image, got an array of shape {image.shape}")
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of white Gaussian noise in ``image``, averaged over channels (blind).

    Donoho and Johnstone (1994): the finest diagonal wavelet coefficients of a photo are mostly noise,
    and their median absolute value over 0.6745 estimates its sigma robustly. Haar coefficients of 2x2
    blocks keep it to one line of numpy.
    """
    image = _check(image)
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:height, :width]
    diagonal = (blocks[0::2, 0::2] - blocks[0::2, 1::2] - blocks[1::2, 0::2] + blocks[1::2, 1::2]) / 2
    return float(np.mean(np.median(np.abs(diagonal), axis=(0, 1)) / 0.6745))


def non_local_means(image: np.ndarray) -> np.ndarray:
    """Non-local means with the noise level estimated from the image itself (blind)."""
    image = _check(image)
    sigma = estimate_noise_sigma(image)
    if sigma <= 0:
        return image.copy()
    denoised = denoise_nl_means(image, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                fast_mode=True, channel_axis=-1)
    return np.clip(denoised, 0.0, 1.0).astype(np.float32)


def median(image: np.ndarray, size: int = 5) -> np.ndarray:
    """A ``size`` x ``size`` median filter per channel."""
    image = _check(image)
    return cv2.medianBlur(image, size)  # float32 input: OpenCV allows kernel sizes 3 and 5


def _guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """The grey guided filter of He et al. (ECCV 2010) with box means: an edge-aware smoothing of ``source``."""
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(array: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(array, -1, size, borderType=cv2.BORDER_REFLECT)

    mean_guide, mean_source = mean(guide), mean(source)
    variance = mean(guide * guide) - mean_guide * mean_guide
    covariance = mean(guide * source) - mean_guide * mean_source
    a = covariance / (variance + eps)
    b = mean_source - a * mean_guide
    return mean(a) * guide + mean(b)


def dark_channel_prior(image: np.ndarray, window: int = 7, omega: float = 0.95, t_min: float = 0.1,
                       radius: int = 16, eps: float = 1e-3) -> np.ndarray:
    """Dehaze by the dark channel prior: estimate airlight and transmission, invert the scattering model."""
    image = _check(image)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (window, window))

    def dark(array: np.ndarray) -> np.ndarray:
        return cv2.erode(array.min(axis=2), kernel, borderType=cv2.BORDER_REFLECT)

    dark_channel = dark(image)
    count = max(1, dark_channel.size // 1000)
    brightest = np.argpartition(dark_channel.ravel(), -count)[-count:]
    candidates = image.reshape(-1, 3)[brightest]
    airlight = candidates[np.argmax(candidates.sum(axis=1))]
    airlight = np.maximum(airlight, 1e-3).astype(np.float32)
    transmission = 1.0 - omega * dark(image / airlight)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    transmission = _guided_filter(grey, transmission.astype(np.float32), radius, eps)
    transmission = np.maximum(transmission, t_min)[..., None]
    return np.clip((image - airlight) / transmission + airlight, 0.0, 1.0).astype(np.float32)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 2-D Gaussian of standard deviation ``sigma`` px, 3 sigma each side."""
    radius = max(1, math.ceil(3 * sigma))
    line = cv2.getGaussianKernel(2 * radius + 1, sigma).astype(np.float32)
    return line @ line.T


def richardson_lucy_generic(image: np.ndarray, sigma: float = 1.0, iterations: int = 10) -> np.ndarray:
    """Richardson-Lucy deconvolution per channel with a generic Gaussian kernel (the true one is unknown)."""
    image = _check(image)
    psf = gaussian_kernel(sigma)
    pad = psf.shape[0]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")  # no ringing from the border
    channels = [richardson_lucy(padded[..., c], psf, num_iter=iterations, clip=True) for c in range(3)]
    return np.clip(np.stack(channels, axis=-1)[pad:-pad, pad:-pad], 0.0, 1.0).astype(np.float32)


def auto_gamma(image: np.ndarray, target: float = 0.45) -> np.ndarray:
    """Brighten by the gamma that moves the mean brightness (max of RGB) to ``target``; hue is kept."""
    image = _check(image)
    value = image.max(axis=2)
    mean = float(np.clip(value.mean(), 1e-4, 0.999))
    gamma = min(1.0, math.log(target) / math.log(mean))  # never darken
    brighter = np.power(value, gamma, dtype=np.float32)
    gain = brighter / np.maximum(value, 1e-4)
    return np.clip(image * gain[..., None], 0.0, 1.0).astype(np.float32)


def clahe(image: np.ndarray, clip_limit: float = 0.01) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (scikit-image; on the V channel of HSV)."""
    from skimage.exposure import equalize_adapthist

    image = _check(image)
    return np.clip(equalize_adapthist(image, clip_limit=clip_limit), 0.0, 1.0).astype(np.float32)


# Family -> (the method's name for tables, the restorer). Every family of dfpir_cli.weights.prompts has one.
CLASSIC_METHODS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "noise": ("non-local means", non_local_means),
    "rain": ("median 5x5", median),
    "haze": ("dark channel prior", dark_channel_prior),
    "blur": ("Richardson-Lucy, generic Gaussian PSF", richardson_lucy_generic),
    "lowlight": ("CLAHE (skimage)", clahe),
}


def classic_method(degradation: str) -> str:
    """The name of the classic method used for ``degradation`` (a name or alias), for tables."""
    return CLASSIC_METHODS[DEGRADATIONS[resolve_degradation(degradation)].family][0]


def classic_restore(image: np.ndarray, degradation: str) -> np.ndarray:
    """Restore a float32 H x W x 3 image in [0, 1] with the classic method of ``degradation``'s family."""
    family = DEGRADATIONS[resolve_degradation(degradation)].family
    return CLASSIC_METHODS[family][1](image)
