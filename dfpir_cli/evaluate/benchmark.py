"""Evaluation: restore every image of a test set and score it against its target (DESIGN.md section 5).

The protocol of the paper by default: both images centre-cropped to a multiple of 16, noisy inputs made
from the clean image by ``clip(clean + N(0,1) * sigma, 0, 255)`` cast to uint8 (numpy's legacy generator
seeded with 0, one stream per test set, images in sorted name order), the restored image clipped to
[0, 1] and scored on full RGB with scikit-image. :class:`~dfpir_cli.evaluate.metrics.MetricOptions` switches each
convention explicitly. Each test image is restored with :func:`dfpir_cli.restore.tiling.restore_tiled`, the code
``restore`` uses: whole when it fits the device's memory (as the paper ran), in overlapping tiles when not.

The degraded input is scored as well, so a report shows what the model adds, and on request a classic,
non-learned method of the same degradation (:mod:`dfpir_cli.evaluate.classic`), so it shows what learning adds. With a
degradation detector (``--degradation auto``) each input is also restored with the prompts the detector picks
(:mod:`dfpir_cli.detect`) and scored beside the oracle prompt, so the cost of detection errors shows in PSNR;
where the detector picks the oracle prompt the restoration is the same computation, so the oracle's result is
reused. A pair that cannot be
read, or whose input and target differ in size, is recorded with its error and the run goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..base.imageio import LoadedImage, read_image, write_image
from ..base.precision import PRECISIONS, FiniteGuard, Reruns
from ..data.photos import float_pixels, square_crop, synthetic_rng
from ..data.synthesis import add_gaussian_noise_uint8, synthesize
from ..data.test_sets import TestSet
from ..detect import AutoPolicy, Detector, known_families, plan_prompts
from ..errors import DfpirError, InputError
from ..restore.ensemble import views_for
from ..restore.pipeline import run_plan
from ..restore.plan import Pass, RestorePlan
from ..restore.tiling import GUIDED_FAMILIES, _free_device_memory, auto_tile_size, bytes_per_tile_pixel, count_tiles
from ..weights.checkpoint import Checkpoint
from ..weights.prompts import family_of
from .classic import classic_method, classic_restore
from .metrics import PAPER, MetricOptions, centre_crop, score

# The paper's numbers (PSNR dB, SSIM), DESIGN.md section 5: Table 1 (3 tasks) and Table 2 (5 tasks).
PAPER_NUMBERS: dict[int, dict[str, tuple[float, float]]] = {
    3: {"SOTS": (31.87, 0.980), "Rain100L": (38.65, 0.982), "CBSD68 sigma=15": (34.14, 0.935),
        "CBSD68 sigma=25": (31.47, 0.893), "CBSD68 sigma=50": (28.25, 0.806), "average": (32.88, 0.919)},
    5: {"SOTS": (31.64, 0.979), "Rain100L": (37.62, 0.978), "CBSD68 sigma=25": (31.29, 0.889),
        "GoPro": (28.82, 0.873), "LOL": (23.82, 0.843), "average": (30.64, 0.913)},
}

ProgressCallback = Callable[[TestSet, str], None]


@dataclass(frozen=True)
class EvalOptions:
    metrics: MetricOptions = PAPER  # the scoring conventions
    tile: int | None = None  # tile side; None: whole image if it fits the device's memory, else tiles; 0: whole
    overlap: int = 32  # tile overlap in pixels
    batch_size: int = 1  # tiles per forward pass
    save_dir: Path | None = None  # keep restored images here (one sub-folder per test set)
    precision: str = "fp32"  # autocast dtype name (fp32, bf16, fp16); `dfpir eval` resolves auto to one
    classic: bool = False  # also score the classic, non-learned method of each degradation (dfpir_cli.evaluate.classic)
    detector: Detector | None = None  # also restore with the prompts it detects (--degradation auto)
    views: int = 1  # self-ensemble: restore in this many mirrored/rotated views and average (dfpir_cli.restore.ensemble)
    haze_guide: int = 0  # haze: tone from a thumbnail this many pixels on its longer side (plan.HAZE_GUIDE_SIDE)


@dataclass
class ImageResult:
    """The scores of one test image (NaN and an error message when it could not be evaluated)."""

    name: str
    psnr: float = math.nan
    ssim: float = math.nan
    input_psnr: float = math.nan
    input_ssim: float = math.nan
    classic_psnr: float = math.nan
    classic_ssim: float = math.nan
    seconds: float = 0.0
    error: str | None = None
    detected: str | None = None  # the prompts the detector picked ("clean": the input left as it is)
    auto_psnr: float = math.nan  # scores of the restoration with the detected prompts
    auto_ssim: float = math.nan


@dataclass
class SetResult:
    """A test set's per-image results and their means, with the paper's numbers where it has them."""

    test_set: TestSet
    images: list[ImageResult] = field(default_factory=list)
    paper: tuple[float, float] | None = None
    views: int = 1  # self-ensemble views its restorations were averaged over
    reruns: Reruns = field(default_factory=Reruns)  # tiles whose output was not finite (restore_array)

    @property
    def scored(self) -> list[ImageResult]:
        return [image for image in self.images if image.error is None]

    @property
    def failed(self) -> list[ImageResult]:
        return [image for image in self.images if image.error is not None]

    @property
    def has_classic(self) -> bool:
        return any(not math.isnan(image.classic_psnr) for image in self.scored)

    def mean(self, attribute: str) -> float:
        values = [getattr(image, attribute) for image in self.scored]
        return float(np.mean(values)) if values else math.nan

    @property
    def detected(self) -> dict[str, int]:
        """How many images the detector sent to each prompt (or chain, or clean)."""
        counts: dict[str, int] = {}
        for image in self.scored:
            if image.detected is not None:
                counts[image.detected] = counts.get(image.detected, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def oracle_share(self, oracle: str) -> float:
        """The share of images for which the detector picked the oracle prompt."""
        detected = [image.detected for image in self.scored if image.detected is not None]
        return sum(name == oracle for name in detected) / len(detected) if detected else math.nan

    def to_json(self) -> dict[str, object]:
        test_set = self.test_set
        auto = {"auto_psnr": _finite(self.mean("auto_psnr")), "auto_ssim": _finite(self.mean("auto_ssim")),
                "detected": self.detected} if self.detected else {}
        return {**auto,
            "label": test_set.label, "dataset": test_set.dataset, "degradation": test_set.degradation,
            "noise_sigma": test_set.noise_sigma, "layout": test_set.layout, "self_ensemble": self.views,
            "images": len(self.scored),
            "failed": {image.name: image.error for image in self.failed}, "unpaired": list(test_set.unpaired),
            "psnr": _finite(self.mean("psnr")), "ssim": _finite(self.mean("ssim")),
            "input_psnr": _finite(self.mean("input_psnr")), "input_ssim": _finite(self.mean("input_ssim")),
            "classic_method": classic_method(test_set.degradation) if self.has_classic else None,
            "classic_psnr": _finite(self.mean("classic_psnr")), "classic_ssim": _finite(self.mean("classic_ssim")),
            "paper_psnr": self.paper[0] if self.paper else None, "paper_ssim": self.paper[1] if self.paper else None,
            "precision_reruns": self.reruns.steps, "nonfinite_tiles": self.reruns.nonfinite,
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def paper_table(checkpoint: Checkpoint, tasks: int | None = None) -> int:
    """Which of the paper's tables to compare with: ``tasks`` if given, else 5 when the model knows blur or low light."""
    if tasks is not None:
        return tasks
    return 5 if {"blur", "lowlight"} & set(checkpoint.prompts.names) else 3


def paper_numbers(test_set: TestSet, table: int) -> tuple[float, float] | None:
    """The paper's (PSNR, SSIM) for this test set in ``table``, or None where the paper has none."""
    return PAPER_NUMBERS.get(table, {}).get(test_set.label)


def _uint8(image: LoadedImage) -> np.ndarray:
    """H x W x 3 uint8 of a decoded image (8-bit exactly; deeper images rounded to 8 bits)."""
    return (image.pixels.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


class PairLoader:
    """Reads a test set's pairs as cropped float32 H x W x 3 arrays in [0, 1], in order.

    Noise test sets draw their noise from one ``RandomState(0)`` stream in image order, like the
    reference scripts' single ``np.random.seed(0)``; the loader keeps that stream.
    """

    def __init__(self, test_set: TestSet, crop_multiple: int) -> None:
        self.test_set = test_set
        self.crop_multiple = crop_multiple
        self.noise_stream = np.random.RandomState(0)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        test_set, pair = self.test_set, self.test_set.pairs[index]
        crop = self.crop_multiple
        target = read_image(pair.target)
        if test_set.noise_sigma is not None:
            clean = centre_crop(_uint8(target), crop)
            noisy = add_gaussian_noise_uint8(clean, test_set.noise_sigma, self.noise_stream)
            return noisy.astype(np.float32) / 255.0, clean.astype(np.float32) / 255.0
        if pair.input is None:  # synthetic: degrade the clean photo here
            clean = float_pixels(target)
            size = int(test_set.extra.get("size", 0) or 0)
            if size:
                clean = square_crop(clean, size)
            clean = centre_crop(clean, crop)
            rng = synthetic_rng(int(test_set.extra.get("seed", 0) or 0), test_set.degradation, index)
            return synthesize(clean, test_set.degradation, rng), clean
        degraded = float_pixels(read_image(pair.input))
        clean = float_pixels(target)
        if degraded.shape != clean.shape:
            raise InputError(f"size mismatch: input {pair.input.name} is {degraded.shape[1]}x{degraded.shape[0]}, "
                             f"target {pair.target.name} is {clean.shape[1]}x{clean.shape[0]}")
        return centre_crop(degraded, crop), centre_crop(clean, crop)


def fits_whole(height: int, width: int, checkpoint: Checkpoint, device: torch.device) -> bool:
    """Whether one forward pass over the whole image fits the device's memory, with the share tiling allows.

    The paper restored test images whole; so does eval wherever memory allows, also on a CPU (where
    ``restore`` caps tiles at 512 px for speed, eval keeps the protocol). Larger images go in tiles.
    """
    share = 0.5 if device.type in ("cuda", "mps") else 0.25
    needed = height * width * bytes_per_tile_pixel(checkpoint.config)
    return needed <= share * _free_device_memory(device)


def restore_array(checkpoint: Checkpoint, image: np.ndarray, degradation: str, options: EvalOptions,
                  device: torch.device, reruns: Reruns | None = None) -> np.ndarray:
    """Restore one H x W x 3 float image with the tiling code of ``restore``; returns it clipped to [0, 1].

    The paper's way by default: whole when it fits, else in tiles. Unlike ``restore`` there is no wider tile
    for haze and low light and no tile-sized thumbnail; haze passes are guided only by ``options.haze_guide``.
    As in ``restore``, a tile whose output is not finite runs again in a safer precision (counted in ``reruns``:
    :class:`~dfpir_cli.base.precision.FiniteGuard`), and NaNs that even fp32 gives are scored as 0.
    """
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    plan = eval_plan(checkpoint, image.shape[0], image.shape[1], degradation, options, device)
    guard = FiniteGuard(checkpoint.model, PRECISIONS[options.precision], reruns)
    return run_plan(checkpoint.model, plan, pixels, device, guard).permute(1, 2, 0).numpy()


def eval_plan(checkpoint: Checkpoint, height: int, width: int, degradation: str, options: EvalOptions,
              device: torch.device) -> RestorePlan:
    """The one-pass plan eval restores an image with: whole when it fits (the paper's way), else in tiles."""
    tile = options.tile
    if tile is None:
        tile = None if fits_whole(height, width, checkpoint, device) else auto_tile_size(
            device, checkpoint.config, batch_size=options.batch_size)
    elif tile == 0:
        tile = None
    guide = options.haze_guide if family_of(degradation) in GUIDED_FAMILIES else 0
    step = Pass(degradation, checkpoint.prompts.code(degradation)[None], tile, options.overlap, guide,
                views_for(degradation, options.views),
                count_tiles(height, width, tile, options.overlap, checkpoint.model.multiple_of),
                checkpoint.weights_of(degradation))
    return RestorePlan(height, width, (step,), options.precision, options.batch_size)


def _restore_detected(checkpoint: Checkpoint, degraded: np.ndarray, oracle_result: np.ndarray, oracle: str,
                      options: EvalOptions, device: torch.device, image: ImageResult,
                      reruns: Reruns | None = None) -> np.ndarray:
    """Restore with what the detector picks (recorded in ``image.detected``); the oracle's result when the same."""
    assert options.detector is not None
    names = checkpoint.prompts.names
    detection = options.detector.detect(degraded, known_families(names), AutoPolicy.of(checkpoint.metadata))
    plan = plan_prompts(detection, names)
    image.detected = "+".join(plan) or "clean"
    if plan == (names[checkpoint.prompts.index(oracle)],):
        return oracle_result
    restored = degraded
    for name in plan:
        restored = restore_array(checkpoint, restored, name, options, device, reruns)
    return restored


def _save(path: Path, restored: np.ndarray) -> None:
    source = LoadedImage(torch.empty(0), None, False, 8, "PNG", None, None)
    write_image(path, torch.from_numpy(np.ascontiguousarray(restored.transpose(2, 0, 1))), source)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text.replace(" sigma=", "_sigma"))


def evaluate_set(checkpoint: Checkpoint, test_set: TestSet, options: EvalOptions = EvalOptions(),
                 table: int | None = None, progress: ProgressCallback | None = None,
                 share: tuple[int, int] = (0, 1)) -> SetResult:
    """Restore and score every pair of ``test_set``; a pair that fails is recorded and the run goes on.

    ``share`` (I, N): only pairs I, I+N, I+2N... (one process of N under torchrun; see :func:`merge_shares`).
    Noisy inputs are still drawn for every pair, so each image gets the noise it gets in one process.
    """
    checkpoint.prompts.code(test_set.degradation)  # an unknown degradation stops here, before any work
    device = next(checkpoint.model.parameters()).device
    result = SetResult(test_set, paper=paper_numbers(test_set, table) if table else None,
                       views=views_for(test_set.degradation, options.views))
    loader = PairLoader(test_set, options.metrics.crop_multiple)
    for index, pair in enumerate(test_set.pairs):
        if index % share[1] != share[0]:
            if test_set.noise_sigma is not None:
                loader.load(index)  # the one noise stream runs through every image, in order
            continue
        started = time.perf_counter()
        image = ImageResult(pair.name)
        try:
            degraded, clean = loader.load(index)
            restored = restore_array(checkpoint, degraded, test_set.degradation, options, device, result.reruns)
            image.psnr, image.ssim = score(restored, clean, options.metrics)
            if options.detector is not None:
                auto = _restore_detected(checkpoint, degraded, restored, test_set.degradation, options, device,
                                         image, result.reruns)
                image.auto_psnr, image.auto_ssim = score(auto, clean, options.metrics)
            image.input_psnr, image.input_ssim = score(degraded, clean, options.metrics)
            if options.classic:
                baseline = classic_restore(degraded, test_set.degradation)
                image.classic_psnr, image.classic_ssim = score(baseline, clean, options.metrics)
            if options.save_dir is not None:
                _save(options.save_dir / _slug(test_set.label) / Path(pair.name).with_suffix(".png"), restored)
        except (DfpirError, OSError, ValueError, cv2.error) as error:
            image.error = str(error)
        except torch.OutOfMemoryError:
            image.error = "out of memory while restoring it: pass a smaller --tile"
        image.seconds = time.perf_counter() - started
        result.images.append(image)
        if progress:
            progress(test_set, pair.name)
    return result


def merge_shares(shares: Sequence[Sequence[SetResult]]) -> list[SetResult]:
    """The results of N processes' shares (each a list over the same test sets) as one process's results."""
    merged = []
    for parts in zip(*shares, strict=True):
        order = {pair.name: position for position, pair in enumerate(parts[0].test_set.pairs)}
        images = sorted((image for part in parts for image in part.images), key=lambda image: order[image.name])
        reruns = Reruns()
        for part in parts:
            reruns.add(part.reruns)
        merged.append(SetResult(parts[0].test_set, images, parts[0].paper, parts[0].views, reruns))
    return merged


def average(results: Sequence[SetResult], attribute: str) -> float:
    """The unweighted mean over test sets, as the paper's "average" column (sets with no score left out)."""
    values = [value for value in (result.mean(attribute) for result in results) if not math.isnan(value)]
    return float(np.mean(values)) if values else math.nan


def summary(results: Sequence[SetResult], options: EvalOptions, table: int | None,
            weights: str | None = None) -> dict[str, Any]:
    """The JSON summary: conventions, per-set means with the paper's numbers, and the average."""
    paper_average = PAPER_NUMBERS.get(table or 0, {}).get("average")
    labels = set(PAPER_NUMBERS.get(table or 0, {}))
    whole_suite = bool(table) and labels - {"average"} <= {r.test_set.label for r in results}
    reruns = Reruns()
    for result in results:
        reruns.add(result.reruns)
    return {
        "weights": weights,
        "conventions": options.metrics.to_json(),
        "precision": options.precision,
        "self_ensemble": options.views,
        "haze_guide": options.haze_guide,
        "precision_reruns": reruns.steps,
        "nonfinite_tiles": reruns.nonfinite,
        "notes": reruns.notes(),
        "paper_table": table,
        "sets": [result.to_json() for result in results],
        "average": {"psnr": _finite(average(results, "psnr")), "ssim": _finite(average(results, "ssim")),
                    "input_psnr": _finite(average(results, "input_psnr")),
                    "input_ssim": _finite(average(results, "input_ssim")),
                    "classic_psnr": _finite(average(results, "classic_psnr")),
                    "classic_ssim": _finite(average(results, "classic_ssim")),
                    "auto_psnr": _finite(average(results, "auto_psnr")), "auto_ssim": _finite(average(results, "auto_ssim")),
                    "paper_psnr": paper_average[0] if paper_average and whole_suite else None,
                    "paper_ssim": paper_average[1] if paper_average and whole_suite else None},
    }


CSV_COLUMNS = ("set", "dataset", "degradation", "noise_sigma", "image", "psnr", "ssim", "input_psnr", "input_ssim",
               "classic_psnr", "classic_ssim", "seconds", "error", "detected", "auto_psnr", "auto_ssim",
               "self_ensemble")


def csv_rows(results: Sequence[SetResult]) -> list[dict[str, object]]:
    """Per-image rows for ``--csv``."""
    rows: list[dict[str, object]] = []
    for result in results:
        test_set = result.test_set
        for image in result.images:
            rows.append({"set": test_set.label, "dataset": test_set.dataset, "degradation": test_set.degradation,
                         "noise_sigma": test_set.noise_sigma if test_set.noise_sigma is not None else "",
                         "image": image.name, "psnr": _csv_float(image.psnr), "ssim": _csv_float(image.ssim),
                         "input_psnr": _csv_float(image.input_psnr), "input_ssim": _csv_float(image.input_ssim),
                         "classic_psnr": _csv_float(image.classic_psnr), "classic_ssim": _csv_float(image.classic_ssim),
                         "seconds": f"{image.seconds:.3f}", "error": image.error or "",
                         "detected": image.detected or "", "auto_psnr": _csv_float(image.auto_psnr),
                         "auto_ssim": _csv_float(image.auto_ssim), "self_ensemble": result.views})
    return rows


def _csv_float(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"
