"""Regression guards: the shipped default model and detector on a few images of each real test split (../shared/realsets).

The floors are the default model's scores on these pairs when it was shipped, less a small margin for
numerical differences between machines: they catch a model or pipeline change that makes real restorations
worse, not a tuning target. Scored with the paper's protocol in fp32 (``dfpir eval``'s code path).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dfpir_cli.datasets import find_dataset
from dfpir_cli.detect import Detector
from dfpir_cli.evaluate import EvalOptions, evaluate_set
from dfpir_cli.imageio import read_image
from dfpir_cli.synthesis import add_gaussian_noise_uint8
from dfpir_cli.weights import resolve_weights

# (dataset, sigma, first N pairs) -> (floor of the model's mean PSNR, the degraded input's mean PSNR)
FLOORS: dict[tuple[str, int | None, int], tuple[float, float]] = {
    ("Rain100L", None, 3): (28.71, 28.703),
    ("CBSD68", 25, 3): (28.22, 20.671),
    ("LOL", None, 3): (22.42, 6.498),
    ("SOTS", None, 2): (20.65, 18.295),
}
MARGIN = 0.2  # dB


@pytest.fixture(scope="module")
def default_model():
    return resolve_weights(None)


@pytest.mark.parametrize(("dataset", "sigma", "count"), list(FLOORS), ids=[key[0] for key in FLOORS])
def test_default_model_holds_its_real_benchmark_scores(realsets_dir: Path, default_model, dataset: str,
                                                       sigma: int | None, count: int) -> None:
    (test_set,) = find_dataset(dataset, realsets_dir / dataset, [sigma] if sigma else [25])
    test_set = replace(test_set, pairs=test_set.pairs[:count])
    result = evaluate_set(default_model, test_set, EvalOptions(tile=0))
    floor, degraded = FLOORS[(dataset, sigma, count)]
    assert not result.failed
    assert result.mean("input_psnr") == pytest.approx(degraded, abs=0.01)  # the same pairs as when measured
    assert result.mean("psnr") >= floor - MARGIN, f"{test_set.label}: {result.mean('psnr'):.2f} dB < {floor} dB"


# The shipped degradation detector on the first images of each real split: (set, images) -> (truth, floor of the
# count it names right). Floors are its counts when it was shipped (9, 10, 10, 10, 10, 10, 2, 2), less one image
# (the two SOTS pairs: none).
DETECTOR_FLOORS: dict[tuple[str, int], tuple[str, int]] = {
    ("Rain100L/input", 10): ("rain", 8),
    ("Rain100L/target", 10): ("clean", 9),
    ("LOL/low", 10): ("lowlight", 9),
    ("LOL/high", 10): ("clean", 9),
    ("CBSD68 sigma 25", 10): ("noise", 9),
    ("CBSD68", 10): ("clean", 9),
    ("SOTS/input", 2): ("haze", 2),
    ("SOTS/target", 2): ("clean", 2),
}


def _real_images(realsets_dir: Path, name: str, count: int) -> list[np.ndarray]:
    folder = realsets_dir / name.split(" ")[0]
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))[:count]
    images = [read_image(path).pixels.permute(1, 2, 0).numpy() for path in paths]
    if "sigma" in name:  # noisy as `dfpir eval --dataset CBSD68` draws it: one legacy stream seeded 0
        stream = np.random.RandomState(0)
        images = [add_gaussian_noise_uint8((image * 255).round().astype(np.uint8), 25, stream).astype(np.float32) / 255
                  for image in images]
    return images


@pytest.mark.parametrize(("name", "count"), list(DETECTOR_FLOORS), ids=[key[0] for key in DETECTOR_FLOORS])
def test_shipped_detector_names_real_degradations(realsets_dir: Path, name: str, count: int) -> None:
    truth, floor = DETECTOR_FLOORS[(name, count)]
    detector = Detector.load()
    labels = [detector.detect(image).label for image in _real_images(realsets_dir, name, count)]
    assert sum(label == truth for label in labels) >= floor, f"{name} (truth {truth}): detected {labels}"
