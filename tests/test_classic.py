"""Classic baselines: each one undoes its degradation on a real photo, and the registry covers every family."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
from skimage.metrics import peak_signal_noise_ratio

from dfpir_cli.data.synthesis import synthesize
from dfpir_cli.errors import InputError, UnknownDegradationError
from dfpir_cli.evaluate import classic
from dfpir_cli.weights.prompts import DEGRADATIONS


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 96 x 96 float32 RGB crop of scikit-image's coffee photo (CC0), scaled down by area."""
    image = skimage.data.coffee().astype(np.float32) / 255.0
    image = cv2.resize(image, (192, 128), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image[16:112, 48:144])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(a, b, data_range=1.0))


def test_every_family_has_a_method() -> None:
    families = {degradation.family for degradation in DEGRADATIONS.values()}
    assert families <= set(classic.CLASSIC_METHODS)
    for name in DEGRADATIONS:
        assert classic.classic_method(name)


@pytest.mark.parametrize(("degradation", "gain_db"),
                         [("noise15", 1.0), ("noise50", 1.0), ("rain", 0.3), ("haze", 1.0), ("lowlight", 1.0)])
def test_classic_restore_beats_the_degraded_input(photo: np.ndarray, degradation: str, gain_db: float) -> None:
    degraded = synthesize(photo, degradation, np.random.default_rng(3))
    restored = classic.classic_restore(degraded, degradation)
    assert restored.shape == photo.shape and restored.dtype == np.float32
    assert 0.0 <= restored.min() and restored.max() <= 1.0
    assert psnr(restored, photo) > psnr(degraded, photo) + gain_db  # a median filter is a weak rain remover


def test_aliases_pick_the_same_method(photo: np.ndarray) -> None:
    degraded = synthesize(photo, "rain", np.random.default_rng(1))
    np.testing.assert_array_equal(classic.classic_restore(degraded, "rainy"), classic.classic_restore(degraded, "rain"))


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_noise_sigma_estimate(photo: np.ndarray, sigma: int) -> None:
    noisy = synthesize(photo, f"noise{sigma}", np.random.default_rng(0))
    estimate = classic.estimate_noise_sigma(noisy) * 255
    assert abs(estimate - sigma) < 0.25 * sigma  # clipping at 0 and 1 and the photo's own texture bias it a little


def test_richardson_lucy_sharpens_a_gaussian_blur(photo: np.ndarray) -> None:
    """With the kernel it assumes, deconvolution recovers detail; with motion blur it only has a guess."""
    blurred = cv2.filter2D(photo, -1, classic.gaussian_kernel(1.0), borderType=cv2.BORDER_REFLECT)
    restored = classic.richardson_lucy_generic(blurred)
    assert psnr(restored, photo) > psnr(blurred, photo) + 1.0


def test_dark_channel_prior_recovers_uniform_haze(photo: np.ndarray) -> None:
    airlight, transmission = np.float32(0.9), np.float32(0.5)
    hazy = photo * transmission + airlight * (1 - transmission)
    restored = classic.dark_channel_prior(hazy)
    assert psnr(restored, photo) > psnr(hazy, photo) + 5.0


def test_auto_gamma_brightens_and_keeps_hue(photo: np.ndarray) -> None:
    dark = photo * np.float32(0.2)
    brighter = classic.auto_gamma(dark)
    assert brighter.mean() > 2 * dark.mean()
    ratio = brighter[..., 0] / np.maximum(brighter[..., 1], 1e-3)
    mask = (dark[..., 1] > 0.02) & (brighter.max(axis=2) < 1.0)
    np.testing.assert_allclose(ratio[mask], (dark[..., 0] / dark[..., 1])[mask], rtol=1e-3)


def test_bad_input_is_refused(photo: np.ndarray) -> None:
    with pytest.raises(InputError, match="H x W x 3"):
        classic.classic_restore(photo[..., 0], "noise25")
    with pytest.raises(UnknownDegradationError):
        classic.classic_restore(photo, "snow")
