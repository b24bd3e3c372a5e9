"""Metrics against scikit-image, and each convention option doing what it says."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dfpir_cli.errors import InputError
from dfpir_cli.evaluate.metrics import MetricOptions, centre_crop, psnr, rgb_to_y, score, ssim


def _pair(seed: int = 0, shape: tuple[int, int, int] = (40, 52, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.random(shape).astype(np.float32)
    restored = np.clip(target + rng.normal(0, 0.05, shape), 0, 1).astype(np.float32)
    return restored, target


def test_defaults_are_scikit_image_on_full_rgb() -> None:
    restored, target = _pair()
    assert psnr(restored, target) == pytest.approx(peak_signal_noise_ratio(target, restored, data_range=1), abs=1e-12)
    assert ssim(restored, target) == pytest.approx(
        structural_similarity(target, restored, data_range=1, channel_axis=-1), abs=1e-12)
    assert score(restored, target) == (psnr(restored, target), ssim(restored, target))


def test_gaussian_ssim_is_wang_et_al() -> None:
    restored, target = _pair(1)
    expected = structural_similarity(target, restored, data_range=1, channel_axis=-1, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
    value = ssim(restored, target, MetricOptions(ssim_gaussian=True))
    assert value == pytest.approx(expected, abs=1e-12) and value != pytest.approx(ssim(restored, target), abs=1e-6)


def test_y_channel_and_border() -> None:
    restored, target = _pair(2)
    white = rgb_to_y(np.ones((1, 1, 3)))
    black = rgb_to_y(np.zeros((1, 1, 3)))
    assert white.item() == pytest.approx(235 / 255, abs=1e-3) and black.item() == pytest.approx(16 / 255)
    y_r, y_t = rgb_to_y(restored)[3:-3, 3:-3], rgb_to_y(target)[3:-3, 3:-3]
    options = MetricOptions(y_channel=True, crop_border=3)
    assert psnr(restored, target, options) == pytest.approx(peak_signal_noise_ratio(y_t, y_r, data_range=1), abs=1e-12)
    assert ssim(restored, target, options) == pytest.approx(structural_similarity(y_t, y_r, data_range=1), abs=1e-12)
    assert "Y channel" in options.describe() and "3 px border" in options.describe()


def test_quantize_rounds_to_8_bits() -> None:
    restored, target = _pair(3)
    rounded = np.round(restored * 255) / 255
    assert psnr(restored, target, MetricOptions(quantize=True)) == pytest.approx(
        peak_signal_noise_ratio(target, rounded, data_range=1), abs=1e-12)


def test_centre_crop_matches_the_reference_crop() -> None:
    image = np.arange(37 * 50 * 3).reshape(37, 50, 3)
    cropped = centre_crop(image, 16)
    # 37 % 16 = 5 -> rows 2..33; 50 % 16 = 2 -> columns 1..49
    assert cropped.shape == (32, 48, 3)
    assert np.array_equal(cropped, image[2:34, 1:49])
    assert centre_crop(image[:32, :48], 16).shape == (32, 48, 3)
    with pytest.raises(InputError, match="smaller than"):
        centre_crop(image[:10], 16)


def test_bad_pairs_are_refused_clearly() -> None:
    restored, target = _pair()
    with pytest.raises(InputError, match="same size"):
        psnr(restored[:-1], target)
    with pytest.raises(InputError, match="leaves nothing"):
        psnr(restored, target, MetricOptions(crop_border=30))
    with pytest.raises(InputError):
        MetricOptions(crop_border=-1)
