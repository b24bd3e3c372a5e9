"""Training the detector on clean photos degraded on the fly by dfpir_cli.data.synthesis, seeded sample by sample.

Each sample is a random region of a random training photo (randomly scaled down, flipped), left clean or
degraded with one family, or two (a family then noise: a hazy, rainy, blurred or dark photo that is also
noisy), optionally JPEG-compressed, rounded to 8 bits, and cut into the views the network reads. Sample i
of a run comes from a generator seeded by (seed, i), so a run is the same with any number of workers.
Clean samples get a faint noise (sigma up to 4) as real clean photos have; noise samples have sigma 12-55.

Real photos whose degradation is known (``LabelledPhotos``: the rainy inputs of a deraining training set as
"rain", its clean targets as "clean") can replace a share of the synthetic samples: a region at native
resolution, as it is, with its label. Every 20th of them is held out and detected whole, as `dfpir detect` does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from ..base.imageio import read_image
from ..data.synthesis import camera_noise, gaussian_noise, jpeg, photographed_rain, synthesize
from ..data.test_sets import list_images
from ..detect.detector import RESTORE_ORDER, Detector, decide
from ..detect.network import DetectorConfig, DetectorNet
from ..detect.views import random_crops, thumbnail
from ..errors import InputError
from .loop import loader_processes

NOISE_RANGE = (12.0, 55.0)  # sigma of the noise family (the prompts cover 15-50)
CAMERA_SIGMA_CAP = 10.0  # at most this noise level for a camera-noise sample: the lightest noise prompt's
CLEAN_NOISE = 4.0  # at most this much noise on a "clean" sample
FAINT = ("rain", "haze")  # families whose strength varies most in real photos (drizzle to downpour, mist to fog)
MIXED_WITH_NOISE = ("haze", "rain", "blur", "lowlight")  # two-degradation samples: one of these, then noise
VALIDATION_SHARE = 20  # every 20th photo (sorted by path) is held out for validation


@dataclass(frozen=True)
class DetectorRecipe:
    steps: int = 2000  # optimiser steps
    batch_size: int = 32  # samples per step
    lr: float = 2e-3  # peak learning rate (AdamW, cosine decay to lr / 100)
    seed: int = 0  # seeds the initial weights and every sample
    clean_share: float = 0.25  # share of samples left clean
    mixed_share: float = 0.2  # share of samples with two degradations
    jpeg_share: float = 0.25  # share of samples JPEG-compressed (quality 75-95) after degrading
    realistic_share: float = 0.5  # share of rain, haze and low light made by the realistic synthesis (else classic)
    faint_share: float = 0.5  # share of faint_families weakened (30-100% of the synthesised change): light rain, thin haze
    faint_families: tuple[str, ...] = FAINT  # the families that are sometimes weakened
    val_samples: int = 600  # seeded validation samples from the held-out photos
    workers: int = 1  # DataLoader processes making samples while the network trains
    labelled_share: float = 0.25  # share of samples taken from labelled real photos, when there are any
    # side of the photo region a sample is made from; its thumbnail is that region shrunk to 64 px, so a region
    # nearer a whole photo's size trains the thumbnail at the scale detection sees (192 px, 3x, missed more rain)
    region: int = 320
    # photos as cameras record them (issue 32): shares of the realistic noise and rain samples made so (at 0, the
    # sample stream is the one recipes before them drew)
    camera_share: float = 0.0  # camera noise (synthesis.camera_noise) instead of white Gaussian noise
    photographed_share: float = 0.0  # photographed rain (synthesis.photographed_rain) instead of Rain100L's


@dataclass(frozen=True)
class LabelledPhotos:
    """Real photos that all have the same known degradation: "clean", a family, or two joined by "+"."""

    label: str  # as parse_label gives it
    photos: list[np.ndarray]  # uint8 H x W x 3

    def target(self, families: Sequence[str]) -> np.ndarray:
        present = () if self.label == "clean" else tuple(self.label.split("+"))
        return np.array([family in present for family in families], dtype=np.float32)


@dataclass
class DetectorReport:
    """What a training run did and how well the result detects the held-out photos' synthetic degradations."""

    train_photos: int
    val_photos: int
    steps: int
    seconds: float
    final_loss: float
    labelled_train: int = 0  # labelled real photos trained on
    labelled_val: int = 0  # labelled real photos held out and detected whole
    val_accuracy: float = math.nan  # the decision (set of families, or clean) exactly right
    val_per_label: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (right, total)

    def to_json(self) -> dict:
        return {"train_photos": self.train_photos, "val_photos": self.val_photos,
                "labelled_train": self.labelled_train, "labelled_val": self.labelled_val, "steps": self.steps,
                "seconds": round(self.seconds, 1), "final_loss": round(self.final_loss, 5),
                "val_accuracy": round(self.val_accuracy, 4),
                "val_per_label": {label: list(counts) for label, counts in self.val_per_label.items()}}


def load_photos(folders: Sequence[Path], option: str = "--clean-dir") -> tuple[list[np.ndarray], list[Path]]:
    """Every readable image under ``folders`` as uint8 H x W x 3 (sorted by path), and the paths skipped."""
    paths: list[Path] = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise InputError(f"{option} {folder}: no such folder")
        paths += list_images(Path(folder), recursive=True)
    photos, skipped = [], []
    for path in sorted(paths):
        try:
            pixels = read_image(path).pixels.permute(1, 2, 0).numpy()
        except InputError:
            skipped.append(path)
            continue
        photos.append(np.ascontiguousarray((pixels * 255).round().astype(np.uint8)))
    if len(photos) < 2:
        raise InputError(f"{option}: training the detector needs at least 2 photos there (hundreds for a useful "
                         f"one); found {len(photos)} in {', '.join(map(str, folders))}")
    return photos, skipped


def parse_label(text: str, families: Sequence[str]) -> str:
    """A labelled folder's label, checked: "clean", a family, or families joined by "+" (restore order)."""
    names = [name.strip() for name in text.split("+")]
    if names == ["clean"]:
        return "clean"
    unknown = [name for name in names if name not in families]
    if unknown or len(set(names)) != len(names) or len(names) > 2:  # the detector decides at most two
        raise InputError(f"label {text!r}: use clean, one of {', '.join(families)}, or two joined by + "
                         f"(rain+noise)")
    return "+".join(sorted(names, key=RESTORE_ORDER.index))


def split_photos(photos: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training, validation): every VALIDATION_SHARE-th photo held out, at least one."""
    val = photos[::VALIDATION_SHARE]
    train = [photo for index, photo in enumerate(photos) if index % VALIDATION_SHARE]
    return train or val, val


def _region(photo: np.ndarray, size: int, rng: np.random.Generator, rescale: bool = True) -> np.ndarray:
    """A random region of the photo, after a random downscale (0.5-1; not with ``rescale`` False: a real
    degradation's pixels are kept as they are) and flip, as float32 in [0, 1]."""
    image: np.ndarray = photo.astype(np.float32) / 255.0
    scale = rng.uniform(0.5, 1.0)
    if rescale and rng.random() < 0.5 and min(image.shape[:2]) * scale >= 96:
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
    height, width = image.shape[:2]
    size_h, size_w = min(size, height), min(size, width)
    top, left = int(rng.integers(0, height - size_h + 1)), int(rng.integers(0, width - size_w + 1))
    image = image[top:top + size_h, left:left + size_w]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def make_sample(photo: np.ndarray, recipe: DetectorRecipe, config: DetectorConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(crops, thumbnail, family targets, noise sigma or 0) of one seeded training sample."""
    image = _region(photo, recipe.region, rng)
    families: list[str] = []
    draw = rng.random()
    if draw >= recipe.clean_share:
        families.append(str(rng.choice(config.families)))
        if draw >= 1.0 - recipe.mixed_share and families[0] in MIXED_WITH_NOISE:
            families.append("noise")
    sigma = 0.0
    model = "realistic" if rng.random() < recipe.realistic_share else "classic"
    for family in families:
        if family == "noise" and model == "realistic" and recipe.camera_share and rng.random() < recipe.camera_share:
            noisy = camera_noise(image, rng)
            # the noise level the prompt is chosen by: a camera's noise is light (on busy texture its JPEG adds more)
            sigma = min(max(1.0, float((noisy - image).std()) * 255.0), CAMERA_SIGMA_CAP)
            image = noisy
        elif family == "noise":
            sigma = float(math.exp(rng.uniform(math.log(NOISE_RANGE[0]), math.log(NOISE_RANGE[1]))))
            image = gaussian_noise(image, sigma, rng)
        elif (family == "rain" and model == "realistic" and recipe.photographed_share
              and rng.random() < recipe.photographed_share):
            degraded = photographed_rain(image, rng)
            if family in recipe.faint_families and rng.random() < recipe.faint_share:
                degraded = image + np.float32(rng.uniform(0.3, 1.0)) * (degraded - image)
            image = degraded
        else:
            degraded = synthesize(image, family, rng, model)
            if family in recipe.faint_families and rng.random() < recipe.faint_share:
                degraded = image + np.float32(rng.uniform(0.3, 1.0)) * (degraded - image)
            image = degraded
    if not families and rng.random() < 0.5:
        image = gaussian_noise(image, rng.uniform(0.0, CLEAN_NOISE), rng)
    target = np.array([family in families for family in config.families], dtype=np.float32)
    return _views(image, target, sigma, recipe, config, rng)


def _views(image: np.ndarray, target: np.ndarray, sigma: float, recipe: DetectorRecipe, config: DetectorConfig,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Maybe JPEG-compress, round to 8 bits and cut into the network's views."""
    if rng.random() < recipe.jpeg_share:
        image = jpeg(image, int(rng.integers(75, 96)))
    image = (np.clip(image, 0, 1) * 255).round().astype(np.float32) / 255.0  # photos are 8-bit
    return (random_crops(image, config.crop, config.crops, rng), thumbnail(image, config.thumbnail), target, sigma)


def make_labelled_sample(photo: np.ndarray, target: np.ndarray, recipe: DetectorRecipe, config: DetectorConfig,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A region of a real photo with its known label (no noise level: a real photo's sigma is not known)."""
    return _views(_region(photo, recipe.region, rng, rescale=False), target, 0.0, recipe, config, rng)


class SyntheticSamples(Dataset):
    """Sample ``index`` of a run: seeded by (seed, stream, index), so workers never change a batch."""

    def __init__(self, photos: list[np.ndarray], count: int, recipe: DetectorRecipe, config: DetectorConfig,
                 stream: int, labelled: Sequence[LabelledPhotos] = ()) -> None:
        self.photos, self.count, self.recipe, self.config, self.stream = photos, count, recipe, config, stream
        self.labelled = [(photo, group.target(config.families)) for group in labelled for photo in group.photos]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.recipe.seed, self.stream, index])
        if self.labelled and self.recipe.labelled_share > 0 and rng.random() < self.recipe.labelled_share:
            # no draw without labelled photos (or none to take): the synthetic stream stays as it was
            photo, known = self.labelled[int(rng.integers(len(self.labelled)))]
            crops, thumb, target, sigma = make_labelled_sample(photo, known, self.recipe, self.config, rng)
        else:
            photo = self.photos[int(rng.integers(len(self.photos)))]
            crops, thumb, target, sigma = make_sample(photo, self.recipe, self.config, rng)
        return (torch.from_numpy(crops).permute(0, 3, 1, 2), torch.from_numpy(thumb).permute(2, 0, 1),
                torch.from_numpy(target), torch.tensor(sigma, dtype=torch.float32))


def _loss(net: DetectorNet, batch) -> torch.Tensor:
    crops, thumbs, targets, sigmas = batch
    logits, log_sigma = net(crops, thumbs)
    loss = F.binary_cross_entropy_with_logits(logits, targets)
    noisy = sigmas > 0
    if noisy.any():
        loss = loss + 0.1 * F.mse_loss(log_sigma[noisy], sigmas[noisy].log())
    return loss


StepCallback = Callable[[int, int, float], None]  # (step, total steps, loss)


def train_detector(photos: list[np.ndarray], recipe: DetectorRecipe = DetectorRecipe(),
                   config: DetectorConfig = DetectorConfig(), on_step: StepCallback | None = None,
                   labelled: Sequence[LabelledPhotos] = ()) -> tuple[Detector, DetectorReport]:
    """Train a detector from clean photos (uint8 H x W x 3) and labelled real ones; validate on the held-out ones."""
    if recipe.steps < 1 or recipe.batch_size < 1:
        raise InputError("--steps and --batch-size must be at least 1")
    train, val = split_photos(photos)
    labelled_train, labelled_val = [], []
    for group in labelled:
        kept, held_out = split_photos(group.photos)
        labelled_train.append(LabelledPhotos(group.label, kept))
        labelled_val.append(LabelledPhotos(group.label, held_out))
    torch.manual_seed(recipe.seed)
    net = DetectorNet(config)
    optimiser = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=recipe.lr, total_steps=recipe.steps,
                                                   pct_start=0.05, final_div_factor=100)
    samples = SyntheticSamples(train, recipe.steps * recipe.batch_size, recipe, config, stream=0,
                               labelled=labelled_train)
    loader = DataLoader(samples, batch_size=recipe.batch_size, **loader_processes(recipe.workers))
    started, loss_value = time.perf_counter(), math.nan
    net.train()
    for step, batch in enumerate(loader, start=1):
        loss = _loss(net, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise InputError(f"the detector's training diverged at step {step} (loss {loss_value}): lower --lr")
        if on_step:
            on_step(step, recipe.steps, loss_value)
    detector = Detector(net.eval())
    report = DetectorReport(len(train), len(val), recipe.steps, time.perf_counter() - started, loss_value,
                            sum(len(group.photos) for group in labelled_train),
                            sum(len(group.photos) for group in labelled_val))
    validate(detector, val, recipe, report)
    validate_labelled(detector, labelled_val, report)
    return detector, report


def validate(detector: Detector, photos: list[np.ndarray], recipe: DetectorRecipe, report: DetectorReport) -> None:
    """Decision accuracy on seeded synthetic samples of held-out photos, overall and per true label."""
    samples = SyntheticSamples(photos, recipe.val_samples, recipe, detector.config, stream=1)
    right = 0
    for index in range(len(samples)):
        crops, thumb, target, _ = samples[index]
        with torch.inference_mode():
            logits, log_sigma = detector.net(crops[None], thumb[None])
        probabilities = torch.sigmoid(logits[0])
        detection = decide({name: float(p) for name, p in zip(detector.config.families, probabilities, strict=True)},
                           float(log_sigma.exp()))
        truth = "+".join(sorted((name for name, t in zip(detector.config.families, target, strict=True) if t),
                                key=RESTORE_ORDER.index)) or "clean"
        right += _count(report, truth, detection.label == truth)
    report.val_accuracy = right / max(1, len(samples))


def validate_labelled(detector: Detector, groups: Sequence[LabelledPhotos], report: DetectorReport) -> None:
    """Each held-out labelled photo detected whole, as `dfpir detect` reads a photo: rows "LABEL (real)"."""
    for group in groups:
        for photo in group.photos:
            detection = detector.detect(photo.astype(np.float32) / 255.0)
            _count(report, f"{group.label} (real)", detection.label == group.label)


def _count(report: DetectorReport, row: str, hit: bool) -> bool:
    hits, total = report.val_per_label.get(row, (0, 0))
    report.val_per_label[row] = (hits + hit, total + 1)
    return hit
