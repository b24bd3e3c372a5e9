"""The shipped degradation detector: load it, run it on a photo, and turn its scores into prompts.

A :class:`Detection` holds a probability per degradation family (independent: a photo may be hazy *and*
noisy), the probability that the photo is clean (no family present), the noise level the network
estimates, and the decision: the families to restore, in :data:`RESTORE_ORDER`. :func:`plan_prompts`
maps that decision onto the prompt names a checkpoint knows (noise15/25/50 by the estimated sigma).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.synthesis import NOISE_LEVELS
from ..errors import CheckpointError, InputError
from ..weights.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    WEIGHTS_SHA256,
    checkpoint_files,
    load_weights_strict,
    read_weights,
    write_folder_atomic,
)
from ..weights.prompts import DEGRADATIONS, resolve_degradation
from .network import FAMILIES, DetectorConfig, DetectorNet
from .views import grid_crops, thumbnail

FORMAT = "dfpir-detector"
FORMAT_VERSION = 1
DEFAULT_DETECTOR = Path(__file__).resolve().parent.parent / "assets" / "detector"

PRESENT = 0.5  # a family whose probability reaches this is detected
CHAIN = 0.7  # a second family is restored too (a chained pass) only when its probability reaches this
LOW_CONFIDENCE = 0.75  # a decision less sure than this is flagged: check the photo or name the degradation
# Restoration undoes the degradations in the reverse of the order a photo acquires them: the scene's haze and
# rain first, then the camera's shake and exposure, then the sensor's noise. So noise is removed first (the
# other prompts were trained on noise-free inputs, and dehazing or brightening amplifies noise left in), and
# haze last. scripts/measure_detector.py measures this order against the reverse one and single passes.
RESTORE_ORDER: tuple[str, ...] = ("noise", "blur", "lowlight", "rain", "haze")


@dataclass(frozen=True)
class AutoPolicy:
    """How sure auto mode must be of a family before it restores it, per checkpoint (issue 32: do no harm).

    A family whose probability reaches :data:`PRESENT` is likely; it is restored only when it also reaches
    the checkpoint's threshold for it, which is higher where the checkpoint restores that family poorly (the
    default model barely deblurs) or where a wrong pass harms more than it helps. A likely family below its
    threshold is *withheld*: the photo is left as it is for that family and flagged for a look. Two sources
    set the thresholds, and the stricter one applies: the checkpoint's ``metadata["auto_thresholds"]`` (how
    well it restores each family) and the detector's ``metadata["thresholds"]`` (how much evidence its
    probabilities are, measured on real photos: the shipped detector's haze scores reach 0.85 on some clean
    photos). Both are ``{family: probability}``, ``"default"`` for the families not named; without them (the
    authors' weights, an older detector) a family is restored at :data:`PRESENT`.

    A checkpoint's thresholds only ever ask for more than :data:`PRESENT`. A detector's are its calibration
    (``calibrates``) and may ask for less: where its scores mean a family is there, measured on real photos
    (the shipped detector's rain scores stay under 0.46 on every clean photo of the real test splits, and
    real rainy photos sit at 0.47-0.51 as often as above). A family neither names is restored at PRESENT.
    """

    thresholds: Mapping[str, float] = field(default_factory=dict)
    calibrates: bool = False  # a detector's thresholds: also below PRESENT

    def _given(self, family: str) -> float | None:
        value = self.thresholds.get(family, self.thresholds.get("default"))
        if value is None:
            return None
        return value if self.calibrates else max(PRESENT, value)

    def needs(self, family: str) -> float:
        """The probability of ``family`` at which it is restored."""
        value = self._given(family)
        return PRESENT if value is None else value

    def stricter(self, other: AutoPolicy) -> AutoPolicy:
        """The policy that needs, for every family, the larger of the thresholds the two name (PRESENT where
        neither names one)."""
        combined = {}
        for family in set(self.thresholds) | set(other.thresholds) | set(FAMILIES):
            given = [value for value in (self._given(family), other._given(family)) if value is not None]
            combined[family] = max(given, default=PRESENT)
        return AutoPolicy(combined, calibrates=True)

    @classmethod
    def of(cls, metadata: Mapping[str, object] | None, key: str = "auto_thresholds",
           owner: str = "checkpoint") -> AutoPolicy:
        """A policy from a checkpoint's (or, with ``key="thresholds"``, a detector's, which calibrates) metadata;
        entries that are not a probability are refused."""
        given = (metadata or {}).get(key) or {}
        if not isinstance(given, Mapping):
            raise CheckpointError(f"the {owner}'s {key} must map families to probabilities, not {given!r}")
        thresholds = {}
        for family, value in given.items():
            if (family not in (*FAMILIES, "default") or isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0.0 <= value <= 1.0):
                raise CheckpointError(f"the {owner}'s {key} entry {family!r}: {value!r} is not a family "
                                      f"({', '.join(FAMILIES)} or default) with a probability from 0 to 1")
            thresholds[family] = float(value)
        return cls(thresholds, calibrates=key == "thresholds")


@dataclass(frozen=True)
class Detection:
    probabilities: dict[str, float]  # per family, independent; plus "clean": no family present
    noise_sigma: float | None  # estimated noise sigma (8-bit scale) when noise is detected
    families: tuple[str, ...]  # what to restore, in RESTORE_ORDER; () when clean
    confidence: float  # how sure the decision is: the least probable chosen family, or "clean"
    withheld: tuple[str, ...] = ()  # likely, but below what the checkpoint needs to restore them (AutoPolicy)

    @property
    def label(self) -> str:
        return "+".join(self.families) or "clean"

    @property
    def low_confidence(self) -> bool:
        return self.confidence < LOW_CONFIDENCE or bool(self.withheld)

    def ranked(self) -> list[tuple[str, float]]:
        """(name, probability), most probable first, "clean" among them."""
        return sorted(self.probabilities.items(), key=lambda item: -item[1])

    def to_json(self) -> dict:
        return {"detected": self.label, "confidence": round(self.confidence, 4),
                "low_confidence": self.low_confidence,
                "probabilities": {name: round(p, 4) for name, p in self.ranked()},
                "noise_sigma": None if self.noise_sigma is None else round(self.noise_sigma, 1),
                "withheld": list(self.withheld)}


def decide(probabilities: dict[str, float], noise_sigma: float, policy: AutoPolicy = AutoPolicy()) -> Detection:
    """The decision from per-family probabilities: the most probable family the policy is sure enough of, a
    second one above :data:`CHAIN` (and its own threshold), or clean; likely families below their threshold
    are withheld (left alone, flagged)."""
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])
    sure = [name for name, p in ranked if p >= policy.needs(name)]
    chosen = sure[:1] + [name for name in sure[1:2] if probabilities[name] >= CHAIN]
    withheld = tuple(name for name, p in ranked if PRESENT <= p < policy.needs(name))
    clean = math.prod(1.0 - p for p in probabilities.values())
    families = tuple(sorted(chosen, key=RESTORE_ORDER.index))
    confidence = min(probabilities[name] for name in families) if families else clean
    return Detection({**probabilities, "clean": clean}, noise_sigma if "noise" in families else None, families,
                     confidence, withheld)


class Detector:
    """The detector network with its config; :meth:`detect` scores one photo."""

    def __init__(self, net: DetectorNet, metadata: dict | None = None) -> None:
        self.net = net.eval()
        self.config = net.config
        self.metadata = metadata or {}
        self.policy = AutoPolicy.of(self.metadata, "thresholds", "detector")  # how much evidence its scores are

    @classmethod
    def load(cls, path: str | Path | None = None) -> Detector:
        """Load a detector folder (config.json + model.safetensors, strict keys); None: the shipped one."""
        folder = Path(path).expanduser() if path is not None else DEFAULT_DETECTOR
        if folder.is_file() and folder.name in (CONFIG_NAME, WEIGHTS_NAME):
            folder = folder.parent
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            what = "the shipped detector is missing from this install" if path is None else f"{folder} is not a detector"
            raise CheckpointError(f"{what}: a detector is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, as "
                                  "`dfpir train-detector --output DIR` writes")
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{folder} cannot be read ({error}): copy or train the detector again") from error
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise CheckpointError(f"{folder / CONFIG_NAME} is not a detector config (no \"format\": \"{FORMAT}\"); "
                                  "a restoration checkpoint goes to --weights, a detector to --detector")
        tensors = read_weights(folder / WEIGHTS_NAME, config.get(WEIGHTS_SHA256))
        try:
            detector_config = DetectorConfig.from_dict(config.get("config", {}))
        except ValueError as error:
            raise CheckpointError(f"{folder / CONFIG_NAME} is corrupt ({error}): copy or train the detector "
                                  "again") from error
        net = DetectorNet(detector_config)
        load_weights_strict(net, {key: value.float() for key, value in tensors.items()}, str(folder))
        return cls(net, config.get("metadata", {}))

    def save(self, folder: str | Path, metadata: dict | None = None) -> Path:
        """Write config.json + model.safetensors (float16: half the size, same decisions) atomically."""
        tensors = {key: value.detach().cpu().half().contiguous() for key, value in self.net.state_dict().items()}
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                  "metadata": metadata if metadata is not None else self.metadata}
        return write_folder_atomic(folder, checkpoint_files(config, tensors, FORMAT))

    @torch.inference_mode()
    def scores(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, families) probabilities and (N,) sigma estimates of H x W x 3 float images in [0, 1].

        Each photo is scored as it is and mirrored left to right (training flips photos so, and no
        degradation changes with it), and the two are averaged: a photo on the edge of a decision is
        decided by both views (see docs/detection.md).
        """
        config = self.config
        grids = np.stack([grid_crops(image, config.crop) for image in images])
        shrunk = np.stack([thumbnail(image, config.thumbnail) for image in images])
        # the mirror image's views are these mirrored: its grid of crops is this grid, to a pixel (the network
        # pools over the crops, in any order; a photo narrower than a crop is padded on the other side), and
        # its thumbnail this one mirrored
        crops = torch.from_numpy(np.concatenate((grids, grids[:, :, :, ::-1])))
        thumbs = torch.from_numpy(np.concatenate((shrunk, shrunk[:, :, ::-1])))
        logits, log_sigma = self.net(crops.permute(0, 1, 4, 2, 3).float(), thumbs.permute(0, 3, 1, 2).float())
        probabilities = torch.sigmoid(logits).reshape(2, len(images), -1).mean(dim=0)
        return probabilities, log_sigma.reshape(2, len(images)).mean(dim=0).exp()

    def detect(self, image: np.ndarray | torch.Tensor, families: Sequence[str] | None = None,
               policy: AutoPolicy = AutoPolicy()) -> Detection:
        """What is wrong with one photo: an H x W x 3 array or a (3, H, W) tensor in [0, 1].

        ``families`` limits the decision to the families a checkpoint can restore (others are left out);
        ``policy`` is how sure of each family that checkpoint needs to be (:class:`AutoPolicy`); the detector's
        own thresholds apply too, the stricter of the two.
        """
        if isinstance(image, torch.Tensor):
            image = image.permute(1, 2, 0).numpy()
        image = np.ascontiguousarray(image, dtype=np.float32)
        probabilities, sigma = self.scores([image])
        wanted = self.config.families if families is None else tuple(f for f in self.config.families if f in families)
        scores = {name: float(probabilities[0, self.config.families.index(name)]) for name in wanted}
        return decide(scores, float(sigma[0]), policy.stricter(self.policy))


def known_families(names: Sequence[str]) -> tuple[str, ...]:
    """The families a checkpoint with these prompt names can restore."""
    return tuple(dict.fromkeys(DEGRADATIONS[name].family for name in names if name in DEGRADATIONS))


def noise_prompt(sigma: float | None, names: Sequence[str]) -> str:
    """The checkpoint's noise prompt nearest (in log sigma) to the estimated sigma; noise25 when unknown.

    A checkpoint with a ``camnoise`` prompt gets it for noise as light as a camera's (sigma 5 counts as its
    level: estimates under about 8.7, halfway in log to 15, go to it; PolyU's photos are estimated 2.6-6,
    CBSD68 with sigma 15 13.7-17.4).
    """
    levels = {name: NOISE_LEVELS[name] for name in names if name in NOISE_LEVELS}
    if not levels:
        raise InputError("this checkpoint has no noise prompt")
    target = math.log(sigma) if sigma and sigma > 0 else math.log(25)
    return min(levels, key=lambda name: abs(math.log(levels[name]) - target))


def plan_prompts(detection: Detection, names: Sequence[str]) -> tuple[str, ...]:
    """The prompt names to restore with, in order, for a checkpoint whose prompts are ``names``."""
    plan = []
    for family in detection.families:
        if family == "noise":
            plan.append(noise_prompt(detection.noise_sigma, names))
        else:
            plan.append(next(name for name in names if name in DEGRADATIONS and DEGRADATIONS[name].family == family))
    return tuple(plan)


def parse_chain(text: str) -> tuple[str, ...]:
    """``haze+noise`` -> ("haze", "noise25"): restoration passes in the order written, names or aliases."""
    parts = [part.strip() for part in text.split("+")]
    if not all(parts):
        raise InputError(f"--degradation {text!r}: join names with '+', e.g. haze+noise")
    names = tuple(resolve_degradation(part) for part in parts)
    if len(set(names)) != len(names):
        raise InputError(f"--degradation {text!r} names the same degradation twice")
    return names
