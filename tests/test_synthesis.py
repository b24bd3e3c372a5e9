"""Synthetic degradations: deterministic per seed, well-formed, and actually degrading."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from dfpir_cli.data.synthesis import (
    SYNTHESIS_MODELS,
    add_gaussian_noise_uint8,
    camera_noise,
    motion_kernel,
    photographed_rain,
    synthesize,
)
from dfpir_cli.errors import InputError, UnknownDegradationError
from dfpir_cli.weights.prompts import DEGRADATIONS


def _clean(height: int = 64, width: int = 80) -> np.ndarray:
    """A smooth colour image with some edges: gradients plus a bright square."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width, y / height, 0.5 + 0.3 * np.sin(x / 7) * np.cos(y / 5)], axis=-1)
    image[height // 4:height // 2, width // 4:width // 2] = 0.9
    return (0.1 + 0.8 * image).astype(np.float32)


@pytest.mark.parametrize("model", SYNTHESIS_MODELS)
@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_each_degradation_is_deterministic_well_formed_and_lowers_psnr(name: str, model: str) -> None:
    clean = _clean()
    first = synthesize(clean, name, np.random.default_rng(7), model)
    again = synthesize(clean, name, np.random.default_rng(7), model)
    other = synthesize(clean, name, np.random.default_rng(8), model)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == clean.shape and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    # a camera's noise (realistic noise15, camnoise) is as light as real photos': PolyU's inputs score 33-39 dB
    limit = 50.0 if (name == "noise15" and model != "classic") or name == "camnoise" else 35.0
    assert peak_signal_noise_ratio(clean, first, data_range=1.0) < limit
    assert np.array_equal(clean, _clean())  # the input is left alone


def test_aliases_and_unknown_names() -> None:
    clean = _clean(32, 32)
    assert np.array_equal(synthesize(clean, "hazy", np.random.default_rng(0)),
                          synthesize(clean, "haze", np.random.default_rng(0)))
    with pytest.raises(UnknownDegradationError):
        synthesize(clean, "snow", np.random.default_rng(0))
    with pytest.raises(InputError):
        synthesize(clean[..., 0], "rain", np.random.default_rng(0))
    with pytest.raises(InputError, match="realistic"):
        synthesize(clean, "rain", np.random.default_rng(0), "photoreal")


def test_noise_levels_have_the_named_standard_deviation() -> None:
    clean = np.full((128, 128, 3), 0.5, dtype=np.float32)  # far from the clipping bounds
    for name, sigma in (("noise15", 15), ("noise25", 25), ("noise50", 50)):
        noisy = synthesize(clean, name, np.random.default_rng(0))
        assert abs(float((noisy - clean).std()) * 255 - sigma) < 0.05 * sigma


def test_haze_follows_the_scattering_model() -> None:
    """Haze brightens dark pixels and pulls every pixel toward one airlight: contrast falls."""
    clean = _clean()
    hazy = synthesize(clean, "haze", np.random.default_rng(3))
    assert hazy.std() < clean.std()
    assert hazy.min() > clean.min()


def test_lowlight_darkens_and_blur_keeps_the_mean() -> None:
    clean = _clean()
    assert synthesize(clean, "lowlight", np.random.default_rng(0)).mean() < 0.6 * clean.mean()
    blurred = synthesize(clean, "blur", np.random.default_rng(0))
    assert abs(float(blurred.mean() - clean.mean())) < 0.02
    kernel = motion_kernel(np.random.default_rng(0), 15)
    assert kernel.shape[0] == kernel.shape[1] >= 15 and kernel.shape[0] % 2
    assert abs(float(kernel.sum()) - 1.0) < 1e-5 and kernel.min() >= 0


def test_motion_kernels_smear_without_shifting() -> None:
    """Each kernel's centre of mass is its centre, so a blurred photo is not also a translated one."""
    rng = np.random.default_rng(7)
    for size in (7, 11, 15, 17, 17, 17):
        kernel = motion_kernel(rng, size)
        ys, xs = np.mgrid[:kernel.shape[0], :kernel.shape[1]]
        centre = (kernel.shape[0] - 1) / 2
        assert abs(float((kernel * xs).sum()) - centre) < 1e-3
        assert abs(float((kernel * ys).sum()) - centre) < 1e-3
        assert np.count_nonzero(kernel > 1e-3) > size  # a path, not a dot


def test_rain_only_adds_brightness() -> None:
    clean = _clean()
    rainy = synthesize(clean, "rain", np.random.default_rng(0))
    assert np.all(rainy >= clean - 1e-7)
    assert (rainy > clean + 0.05).mean() > 0.005  # visible streaks


def test_uint8_noise_matches_the_reference_protocol() -> None:
    """clip(clean + N(0,1)*sigma, 0, 255).astype(uint8) with numpy's legacy generator seeded with 0."""
    clean = (np.arange(48 * 40 * 3) % 256).astype(np.uint8).reshape(48, 40, 3)
    noisy = add_gaussian_noise_uint8(clean, 25)
    np.random.seed(0)
    expected = np.clip(clean + np.random.randn(*clean.shape) * 25, 0, 255).astype(np.uint8)
    assert noisy.dtype == np.uint8 and np.array_equal(noisy, expected)
    stream = np.random.RandomState(0)
    first, second = add_gaussian_noise_uint8(clean, 15, stream), add_gaussian_noise_uint8(clean, 15, stream)
    assert np.array_equal(first, add_gaussian_noise_uint8(clean, 15, 0)) and not np.array_equal(first, second)
    with pytest.raises(InputError):
        add_gaussian_noise_uint8(clean.astype(np.float32), 25)


def _streak_extent(layer: np.ndarray, gradient_angle: float) -> tuple[float, float]:
    """(lag in px where the layer's autocorrelation falls to half along the streaks, its value 1 px across)."""
    centred = layer - layer.mean()
    spectrum = np.fft.fft2(centred)
    correlation = np.fft.fftshift(np.real(np.fft.ifft2(spectrum * np.conj(spectrum))))
    correlation = (correlation / correlation.max()).astype(np.float32)
    cy, cx = correlation.shape[0] // 2, correlation.shape[1] // 2

    def at(angle: float, lag: float) -> float:
        point = (cx + lag * np.cos(angle), cy + lag * np.sin(angle))
        return float(cv2.getRectSubPix(correlation, (1, 1), point)[0, 0])

    along = gradient_angle + np.pi / 2
    half = next((lag for lag in np.arange(0.5, 60, 0.5) if at(along, lag) < 0.5), 60.0)
    return float(half), at(gradient_angle, 1.0)


def test_realistic_rain_has_rain100l_like_streaks() -> None:
    """Streaks within 30 degrees of vertical, as long and wide as Rain100L's, covering a few percent of the
    photo and never darkening it."""
    clean = np.full((160, 160, 3), 0.3, dtype=np.float32)
    coverage, angles, lengths, widths = [], [], [], []
    for seed in range(6):
        rainy = synthesize(clean, "rain", np.random.default_rng(seed), "realistic")
        assert np.all(rainy >= clean - 1e-6)
        streak = (rainy - clean).mean(axis=2) > 0.02
        coverage.append(streak.mean())
        # one direction, within 30 degrees of vertical: the angle of the layer's dominant gradient (structure
        # tensor of Sobel derivatives, as the Rain100L figures in synthesis.py were measured) from horizontal
        layer = (rainy - clean).mean(axis=2)
        across, down = cv2.Sobel(layer, cv2.CV_32F, 1, 0), cv2.Sobel(layer, cv2.CV_32F, 0, 1)
        angle = 0.5 * np.degrees(np.arctan2(2 * (across * down).sum(), (across**2).sum() - (down**2).sum()))
        angles.append(abs(angle))
        half_length, across_1px = _streak_extent(layer, np.radians(angle))
        lengths.append(half_length)
        widths.append(across_1px)
    assert 0.01 < float(np.median(coverage)) < 0.35
    # Rain100L: the layer's autocorrelation halves 11-18 px along the streaks and is 0.57-0.67 at 1 px across
    assert 9 <= float(np.median(lengths)) <= 20 and 0.45 < float(np.median(widths)) < 0.8
    assert max(angles) < 30 and min(angles) < 10 and max(angles) > 15  # mostly near vertical, some slanted


def test_realistic_rain_always_draws_a_streak_even_on_a_small_patch() -> None:
    clean = np.full((24, 24, 3), 0.3, dtype=np.float32)  # ~0.3-2 streak seeds expected: often none by chance
    for seed in range(30):
        assert synthesize(clean, "rain", np.random.default_rng(seed), "realistic").max() > 0.31, seed


def test_realistic_haze_is_tinted_and_deeper_somewhere() -> None:
    clean = _clean(96, 128)
    hazy = synthesize(clean, "haze", np.random.default_rng(2), "realistic")
    assert hazy.std() < clean.std() and hazy.min() > clean.min()
    lift = (hazy - clean).mean(axis=2)
    assert lift.max() - lift.min() > 0.05  # transmission varies with depth


def test_camera_low_light_is_dark_quantised_and_noisy() -> None:
    clean = np.full((64, 64, 3), 0.6, dtype=np.float32)
    dark = synthesize(clean, "lowlight", np.random.default_rng(4), "realistic")
    assert dark.mean() < 0.45
    assert np.allclose(dark * 255, np.round(dark * 255), atol=1e-4)  # 8-bit, as a camera writes
    assert dark.std() > 0  # shot and read noise on a flat field


def test_mixed_synthesis_draws_either_model_by_a_coin() -> None:
    clean = np.random.default_rng(0).random((48, 64, 3), dtype=np.float32)
    seen = set()
    for seed in range(12):
        mixed = synthesize(clean, "rain", np.random.default_rng(seed), "mixed")
        coin = np.random.default_rng(seed)
        model = "realistic" if coin.random() < 0.5 else "classic"
        assert np.array_equal(mixed, synthesize(clean, "rain", coin, model))  # the rest of the stream as that model
        seen.add(model)
    assert seen == {"classic", "realistic"}


def _correlations(noise: np.ndarray) -> tuple[float, float]:
    """(mean correlation between colour channels, correlation between horizontal neighbours) of a noise field."""
    channels = np.corrcoef(noise.reshape(-1, 3).T)
    between = float((channels[0, 1] + channels[0, 2] + channels[1, 2]) / 3)
    return between, float(np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1])


def test_camera_noise_is_light_correlated_and_8_bit() -> None:
    """PolyU's real noise: sigma 3-5 (8-bit), channels correlated 0.55-0.82, neighbours 0.56-0.80 (module docstring)."""
    clean = _clean(256, 256)
    sigmas, channels, neighbours = [], [], []
    for seed in range(8):
        noisy = camera_noise(clean, np.random.default_rng(seed))
        assert noisy.dtype == np.float32 and np.array_equal(noisy, np.round(noisy * 255) / 255)  # a decoded JPEG
        assert np.array_equal(noisy, camera_noise(clean, np.random.default_rng(seed)))
        between, beside = _correlations(noisy - clean)
        sigmas.append(float((noisy - clean).std()) * 255)
        channels.append(between)
        neighbours.append(beside)
    assert 1.0 < min(sigmas) and max(sigmas) < 12.0 and 2.0 < float(np.median(sigmas)) < 7.0
    assert 0.45 < float(np.median(channels)) < 0.95 and 0.45 < float(np.median(neighbours)) < 0.9
    white = synthesize(clean, "noise15", np.random.default_rng(0), "classic") - clean
    assert abs(_correlations(white)[1]) < 0.1  # the benchmark's Gaussian noise stays white
    realistic = synthesize(clean, "noise15", np.random.default_rng(0), "realistic")
    assert float((realistic - clean).std()) * 255 < 12.0  # realistic noise15 is the camera's noise
    for model in ("classic", "realistic", "mixed"):  # camnoise, dfpir's own prompt, is the camera's noise in all
        camera = synthesize(clean, "camera-noise", np.random.default_rng(3), model)
        assert np.array_equal(camera, camera_noise(clean, np.random.default_rng(3)))


def test_photographed_rain_brightens_and_veils() -> None:
    clean = _clean(160, 200)
    veiled = 0
    for seed in range(10):
        rainy = photographed_rain(clean, np.random.default_rng(seed))
        assert rainy.shape == clean.shape and rainy.dtype == np.float32 and 0.0 <= rainy.min() <= rainy.max() <= 1.0
        assert np.all(rainy >= clean - 0.45)  # rain and its veil light the scene up; a veil may dim a bright pixel
        assert rainy.mean() > clean.mean()
        veiled += rainy.std() < 0.9 * clean.std()
    assert veiled >= 3  # heavy rain's veil lowers the contrast in most photos
