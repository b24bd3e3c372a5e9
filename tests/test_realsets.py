"""Regression guards: the shipped default model and detector on a few images of each real test split (../shared/realsets).

The floors are the default model's scores on these pairs when it was shipped, less a small margin for
numerical differences between machines: they catch a model or pipeline change that makes real restorations
worse, not a tuning target. Scored with the paper's protocol in fp32 (``dfpir eval``'s code path).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dfpir_cli.data.test_sets import find_dataset
from dfpir_cli.detect import Detector
from dfpir_cli.evaluate.benchmark import EvalOptions, PairLoader, evaluate_set
from dfpir_cli.evaluate.metrics import PAPER
from dfpir_cli.weights.resolve import resolve_weights

# (dataset, sigma, first N pairs) -> (floor of the model's mean PSNR, the degraded input's mean PSNR)
FLOORS: dict[tuple[str, int | None, int], tuple[float, float]] = {
    ("Rain100L", None, 3): (32.72, 28.703),
    ("CBSD68", 25, 3): (29.16, 20.671),
    ("LOL", None, 3): (20.00, 6.498),
    ("SOTS", None, 2): (24.46, 18.295),
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


# The shipped degradation detector on the first pairs of each real split, read as `dfpir eval` reads them
# (CBSD68 noisy at sigma 25 from its one seeded stream): (set, side, pairs) -> (truth, floor of the count it names
# right). Its counts now (each photo scored with its mirror image): 10, 10, 10, 10, 10, 10, 2, 2; floors allow one
# image less on the sets of 10.
DETECTOR_FLOORS: dict[tuple[str, str, int], tuple[str, int]] = {
    ("Rain100L", "input", 10): ("rain", 9),
    ("Rain100L", "target", 10): ("clean", 9),
    ("LOL", "input", 10): ("lowlight", 9),
    ("LOL", "target", 10): ("clean", 9),
    ("CBSD68", "input", 10): ("noise", 9),
    ("CBSD68", "target", 10): ("clean", 9),
    ("SOTS", "input", 2): ("haze", 2),
    ("SOTS", "target", 2): ("clean", 2),
}


@pytest.mark.parametrize(("dataset", "side", "count"), list(DETECTOR_FLOORS),
                         ids=[f"{key[0]}-{key[1]}" for key in DETECTOR_FLOORS])
def test_shipped_detector_names_real_degradations(realsets_dir: Path, dataset: str, side: str, count: int) -> None:
    truth, floor = DETECTOR_FLOORS[(dataset, side, count)]
    (test_set,) = find_dataset(dataset, realsets_dir / dataset, [25])
    loader = PairLoader(test_set, PAPER.crop_multiple)
    detector = Detector.load()
    labels = [detector.detect(loader.load(index)[side == "target"]).label for index in range(count)]
    assert sum(label == truth for label in labels) >= floor, f"{dataset} {side} (truth {truth}): detected {labels}"
