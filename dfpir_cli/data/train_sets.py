"""Training data for DFPIR: the paired layouts of the reference code, or pairs synthesised from clean photos.

DESIGN.md section 4. A *source* is one folder and the degradations it serves: a folder of clean images
serves noise15/noise25/noise50 (noise added on the fly, like the reference code) or, with ``--clean-dir``,
every degradation (:func:`dfpir_cli.data.synthesis.synthesize`, the seeded synthesis eval's built-in benchmark
uses); a paired folder serves one degradation:

- rain: Rain100L style ``rainy/rain-N.png`` with ``gt/norain-N.png`` (also ``input/`` with ``target/``);
- haze: RESIDE OTS style ``synthetic/ID_a_b.jpg`` (sub-folders allowed) with ``original/ID.jpg``;
- blur: GoPro ``blur/`` with ``sharp/`` (per scene folder, same file names);
- lowlight: LOL ``low/`` with ``high/`` (same file names).

Real pairs for any one degradation (``--pairs NAME=DIR``, such as real camera noise for noise15) join its other
data: ``input/`` with ``target/`` (same file names), the family's own layout, or PolyU's ``real/`` with ``mean/``
(``X_real`` with ``X_mean``).

Every random choice a training sample needs (crop, flips, synthetic degradation) comes from a generator
seeded by ``(seed, phase, position)``, where *position* counts samples in the global stream. The stream is
a seeded permutation per epoch, each global batch is a run of consecutive positions and each process takes
its slice of it. So a batch is the same whatever the number of processes and whatever the DataLoader
workers, and resuming at a step needs nothing but the step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError
from ..weights.prompts import DEGRADATIONS
from . import test_sets
from .synthesis import synthesize
from .test_sets import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class PairedLayout:
    """How one paired training set names its folders and files."""

    family: str  # the degradation family it trains
    folders: tuple[str, ...]  # default names of its sub-folder of --data-root, first match wins
    dirs: tuple[tuple[str, str], ...]  # (degraded folder, clean folder) name pairs, siblings in the tree
    target_stem: Callable[[str], str]  # degraded file stem -> clean file stem
    description: str  # for messages


def _rain_stem(stem: str) -> str:
    return f"no{stem}" if stem.startswith("rain-") or stem.startswith("rain_") else stem


def _haze_stem(stem: str) -> str:
    return stem.split("_")[0]


def _same_stem(stem: str) -> str:
    return stem


def _polyu_stem(stem: str) -> str:
    return stem[: -len("_real")] + "_mean" if stem.endswith("_real") else stem


LAYOUTS: dict[str, PairedLayout] = {layout.family: layout for layout in (
    PairedLayout("rain", ("derain", "Derain", "rain", "Rain100L"), (("rainy", "gt"), ("input", "target")),
                 _rain_stem, "Rain100L style: rainy/rain-N.png with gt/norain-N.png"),
    PairedLayout("haze", ("dehaze", "Dehaze", "haze", "OTS", "RESIDE"),
                 (("synthetic", "original"), ("hazy", "clear"), ("input", "target")),
                 _haze_stem, "RESIDE OTS style: synthetic/ID_a_b.jpg with original/ID.jpg"),
    PairedLayout("blur", ("deblur", "Deblur", "blur", "GoPro", "gopro"), (("blur", "sharp"), ("input", "target")),
                 _same_stem, "GoPro style: blur/NAME.png with sharp/NAME.png"),
    PairedLayout("lowlight", ("lowlight", "low-light", "LOL", "lol"), (("low", "high"), ("input", "target")),
                 _same_stem, "LOL style: low/NAME.png with high/NAME.png"),
)}
REAL_PAIRS = PairedLayout("real", (), (("input", "target"), ("real", "mean")), _polyu_stem,
                          "input/NAME with target/NAME, or PolyU's real/X_real with mean/X_mean")
NOISE_FOLDERS = ("denoise", "Denoise", "noise", "clean")
FAMILIES = ("noise", "rain", "haze", "blur", "lowlight")


@dataclass(frozen=True)
class Pair:
    """One training or validation example: a clean image and its degraded version (or ``None``: synthesise)."""

    degradation: str
    target: Path
    input: Path | None = None


@dataclass
class Source:
    """One folder and the degradations it serves: its (degraded or None, clean) file pairs."""

    names: tuple[str, ...]
    root: Path
    pairs: list[tuple[Path | None, Path]]
    kind: str  # "clean" (synthesised) or the paired layout's description
    repeat: int | None = None  # times per epoch; None: the degradation's --repeat


@dataclass
class DataReport:
    """What the scan of the image files found: the run goes on, the command says so."""

    unreadable: list[Path] = field(default_factory=list)
    mismatched: list[tuple[Path, Path]] = field(default_factory=list)
    small: list[Path] = field(default_factory=list)  # smaller than the patch: reflect-padded


@dataclass
class TrainingData:
    """Training pairs, held-out validation pairs and the scan report, for a list of degradations."""

    degradations: tuple[str, ...]
    train: list[Pair]
    val: list[Pair]
    sources: list[Source]
    report: DataReport

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per degradation: (training pairs, validation pairs)."""
        return {name: (sum(p.degradation == name for p in self.train), sum(p.degradation == name for p in self.val))
                for name in self.degradations}


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` and its sub-folders (sorted, hidden files skipped)."""
    return test_sets.list_images(folder, recursive=True)


def _numeric_key(path: Path) -> list:
    return [int(token) if token.isdigit() else token for token in re.split(r"(\d+)", str(path))]


class NoPairsFound(DatasetError):
    """A folder holds none of a layout's (degraded, clean) folder pairs."""


def pair_layout(root: Path, layout: PairedLayout) -> list[tuple[Path | None, Path]]:
    """Pair the degraded and clean files of one paired training set; list what is missing if anything is."""
    if not root.is_dir():
        raise DatasetError(f"{layout.family} training folder {root} does not exist")
    found: list[tuple[Path, Path]] = []
    for degraded_name, clean_name in layout.dirs:
        candidates = [root] if root.name == degraded_name else []
        candidates += [path for path in root.rglob(degraded_name) if path.is_dir()]
        found += [(d, d.parent / clean_name) for d in candidates if (d.parent / clean_name).is_dir()]
        if found:
            break
    if not found:
        expected = " or ".join(f"{d}/ with {c}/" for d, c in layout.dirs)
        raise NoPairsFound(f"{root} has no {layout.family} pairs: expected {expected} ({layout.description}). "
                           f"Point --{layout.family}-dir at the folder that holds them.")
    pairs: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for degraded_dir, clean_dir in found:
        clean_files = list_images(clean_dir)
        by_relative = {(p.relative_to(clean_dir).parent, p.stem): p for p in clean_files}
        by_stem: dict[str, Path] = {}
        for path in clean_files:
            by_stem.setdefault(path.stem, path)
        for degraded in list_images(degraded_dir):
            stem = layout.target_stem(degraded.stem)
            target = by_relative.get((degraded.relative_to(degraded_dir).parent, stem)) or by_stem.get(stem)
            if target is None:
                missing.append(f"{degraded} -> {clean_dir}/{stem}.*")
            else:
                pairs.append((degraded, target))
    if missing:
        shown = "\n  ".join(missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DatasetError(f"{len(missing)} degraded {layout.family} image(s) in {root} have no clean counterpart "
                           f"({layout.description}):\n  {shown}{more}\n"
                           "Add the missing clean images or remove the degraded ones.")
    if not pairs:
        raise DatasetError(f"{root} has {layout.family} folders but no images in them ({layout.description})")
    ordered = sorted(pairs, key=lambda pair: _numeric_key(pair[0]))
    return list(ordered)  # widened to the (degraded or None, clean) pairs that Source holds


def _clean_source(names: tuple[str, ...], root: Path, what: str) -> Source:
    if not root.is_dir():
        raise DatasetError(f"{what} folder {root} does not exist")
    images = list_images(root)
    if not images:
        raise DatasetError(f"{what} folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return Source(names, root, [(None, path) for path in images], "clean images, degraded on the fly")


def real_pairs_source(name: str, folder: Path, repeat: int = 1) -> Source:
    """Real degraded/clean pairs for one degradation (``--pairs NAME=DIR``), repeated ``repeat`` times per epoch."""
    family = DEGRADATIONS[name].family
    layouts = [REAL_PAIRS] + ([LAYOUTS[family]] if family in LAYOUTS else [])
    if not folder.is_dir():
        raise DatasetError(f"--pairs {name}={folder}: the folder does not exist")
    for layout in layouts:
        try:
            return Source((name,), folder, pair_layout(folder, layout), f"real pairs, {layout.description}", repeat)
        except NoPairsFound:
            continue
    expected = "; ".join(layout.description for layout in layouts)
    raise DatasetError(f"--pairs {name}={folder}: no degraded/clean pairs found. Expected {expected}.")


def find_sources(degradations: Sequence[str], data_root: Path | None = None,
                 folders: Mapping[str, Path | None] | None = None, clean_dir: Path | None = None,
                 pairs: Mapping[str, Path] | None = None, pairs_repeat: int = 1) -> list[Source]:
    """Where each degradation's data comes from: an explicit folder, a sub-folder of ``data_root``, or ``clean_dir``.

    ``folders`` maps a family (noise, rain, haze, blur, lowlight) to its folder and wins over ``data_root``;
    a family found in neither is synthesised from ``clean_dir`` when one is given. ``pairs`` maps a degradation
    to a folder of real pairs that joins its data (:func:`real_pairs_source`).
    """
    folders = {family: Path(path) for family, path in (folders or {}).items() if path is not None}
    by_family: dict[str, list[str]] = {}
    for name in degradations:
        by_family.setdefault(DEGRADATIONS[name].family, []).append(name)
    sources: list[Source] = []
    synthesised: list[str] = []
    for family, names in by_family.items():
        folder = folders.get(family)
        defaults = NOISE_FOLDERS if family == "noise" else LAYOUTS[family].folders
        if folder is None and data_root is not None:
            folder = next((data_root / name for name in defaults if (data_root / name).is_dir()), None)
        if folder is None and clean_dir is None and all(name in (pairs or {}) for name in names):
            continue  # real pairs alone
        if folder is None and clean_dir is None and data_root is not None:
            raise DatasetError(
                f"no training folder for {family} ({', '.join(names)}) in {data_root}: looked for "
                f"{', '.join(defaults)}. Create one, pass --{family}-dir DIR, or pass --clean-dir to "
                "synthesise it from clean photos.")
        if folder is None:
            if clean_dir is None:
                raise DatasetError(f"no training data for {family}: pass --data-root, --{family}-dir or --clean-dir")
            synthesised += names
        elif family == "noise":
            sources.append(_clean_source(tuple(names), folder, "denoising (clean images)"))
        else:
            layout = LAYOUTS[family]
            sources.append(Source(tuple(names), folder, pair_layout(folder, layout), layout.description))
    if synthesised:
        assert clean_dir is not None  # a family is synthesised only when there is a clean_dir
        sources.append(_clean_source(tuple(synthesised), Path(clean_dir), "--clean-dir"))
    for name, folder in (pairs or {}).items():
        if name not in degradations:
            raise DatasetError(f"--pairs {name}={folder}: {name} is not one of the degradations trained "
                               f"({', '.join(degradations)})")
        sources.append(real_pairs_source(name, Path(folder), pairs_repeat))
    return sources


def _image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file header; None when the file cannot be read as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            return height, width
    except (OSError, UnidentifiedImageError, ValueError):
        pixels = read_image(path)
        return None if pixels is None else pixels.shape[:2]


def scan(sources: list[Source], patch_size: int, progress: Callable[[int, int], None] | None = None) -> DataReport:
    """Check every file's header: drop unreadable files and size-mismatched pairs, note images to pad."""
    report = DataReport()
    total = sum(len(source.pairs) for source in sources)
    done = 0
    sizes: dict[Path, tuple[int, int] | None] = {}

    def size_of(path: Path) -> tuple[int, int] | None:
        if path not in sizes:
            sizes[path] = _image_size(path)
            if sizes[path] is None:
                report.unreadable.append(path)
        return sizes[path]

    for source in sources:
        kept = []
        for degraded, clean in source.pairs:
            clean_size = size_of(clean)
            degraded_size = size_of(degraded) if degraded is not None else clean_size
            done += 1
            if progress is not None and (done % 256 == 0 or done == total):
                progress(done, total)
            if clean_size is None or degraded_size is None:
                continue
            if degraded_size != clean_size:
                assert degraded is not None  # a clean-only pair has one size
                report.mismatched.append((degraded, clean))
                continue
            if min(clean_size) < patch_size:
                report.small.append(clean)
            kept.append((degraded, clean))
        source.pairs = kept
        if not kept:
            raise DatasetError(f"no usable images left in {source.root} for {', '.join(source.names)}: "
                               f"{len(report.unreadable)} unreadable, {len(report.mismatched)} size-mismatched pair(s)")
    return report


def split_sources(sources: list[Source], degradations: Sequence[str], val_per_task: int, seed: int,
                  repeat: dict[str, int] | None = None) -> tuple[list[Pair], list[Pair]]:
    """Hold out ``val_per_task`` clean images per source (all their degraded versions leave training).

    Held-out images are chosen by a seeded permutation, grouped by clean image so that no view of a
    validation scene (OTS has many hazy versions of each) is trained on. A source keeps at least one
    image for training. ``repeat`` multiplies a degradation's training pairs (the reference code repeats
    Rain100L's 200 pairs 120 times to balance it against OTS).
    """
    repeat = repeat or {}
    train: list[Pair] = []
    val: list[Pair] = []
    order = {name: index for index, name in enumerate(degradations)}
    for number, source in enumerate(sources):
        groups: dict[Path, list[Path | None]] = {}
        for degraded, clean in source.pairs:
            groups.setdefault(clean, []).append(degraded)
        targets = sorted(groups, key=_numeric_key)
        held = min(val_per_task, len(targets) - 1)
        rng = np.random.default_rng([seed, 7919, number])
        held_out = {targets[i] for i in rng.permutation(len(targets))[:max(held, 0)]}
        for name in source.names:
            times = source.repeat if source.repeat is not None else repeat.get(name, 1)
            for target in targets:
                if target in held_out:
                    val.append(Pair(name, target, groups[target][0]))
                else:
                    train += [Pair(name, target, degraded) for degraded in groups[target]] * times
    train.sort(key=lambda pair: order[pair.degradation])
    val.sort(key=lambda pair: order[pair.degradation])
    return train, val


def build_training_data(degradations: Sequence[str], *, data_root: Path | None = None,
                        folders: Mapping[str, Path | None] | None = None, clean_dir: Path | None = None,
                        patch_size: int = 128, val_per_task: int = 8, seed: int = 0,
                        repeat: dict[str, int] | None = None, pairs: Mapping[str, Path] | None = None,
                        pairs_repeat: int = 1, progress: Callable[[int, int], None] | None = None) -> TrainingData:
    """Find, pair, check and split the training data of ``degradations`` (canonical names)."""
    if data_root is None and clean_dir is None and not any((folders or {}).values()) and not pairs:
        raise DatasetError("no training data: pass --data-root DIR (one sub-folder per task), per-task folders "
                           "such as --rain-dir, or --clean-dir DIR to synthesise every degradation from clean photos")
    if data_root is not None and not Path(data_root).is_dir():
        raise DatasetError(f"--data-root {data_root} is not a folder")
    sources = find_sources(degradations, Path(data_root) if data_root else None, folders, clean_dir, pairs,
                           pairs_repeat)
    report = scan(sources, patch_size, progress)
    train, val = split_sources(sources, degradations, val_per_task, seed, repeat)
    return TrainingData(tuple(degradations), train, val, sources, report)


def read_image(path: Path) -> np.ndarray | None:
    """An image file as float32 RGB in [0, 1] (8/16-bit, grey or alpha handled); None if unreadable.

    Leaner than :func:`dfpir_cli.base.imageio.read_image` (no EXIF/ICC handling, about 5x faster on a 720p PNG),
    which matters in a data loader that decodes every sample.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        return None
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale = 65535.0
    else:
        scale = 1.0
    image = image.astype(np.float32) / np.float32(scale)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[..., :3]  # training learns colour; alpha is not restored
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(np.clip(image[..., ::-1], 0.0, 1.0))


def pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad an image that is smaller than ``size`` on a side (bottom and right)."""
    pad_h, pad_w = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    return image


class PatchDataset(Dataset):
    """Random patches of the training pairs; item ``(position, index)`` is fully determined by its position.

    Returns ``(degraded, clean, task, bad)``: CHW float32 tensors, the degradation's index in
    ``degradations`` and how many unreadable files were stepped over to make this item.
    """

    def __init__(self, pairs: list[Pair], degradations: Sequence[str], patch_size: int, seed: int, phase: int,
                 flips: bool = True, synthesis: str = "classic", identity: float = 0.0) -> None:
        self.pairs = pairs
        self.task_index = {name: index for index, name in enumerate(degradations)}
        self.patch_size = patch_size
        self.seed = seed
        self.phase = phase
        self.flips = flips
        self.synthesis = synthesis
        self.identity = identity

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        position, index = item
        rng = np.random.default_rng([self.seed, self.phase, position])
        for bad in range(len(self.pairs)):
            pair = self.pairs[(index + bad) % len(self.pairs)]
            sample = self._load(pair, rng)
            if sample is not None:
                degraded, clean = sample
                return degraded, clean, self.task_index[pair.degradation], bad
        raise DatasetError("no training image could be read any more (files deleted or corrupted during the run?)")

    def _load(self, pair: Pair, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
        clean = read_image(pair.target)
        degraded = read_image(pair.input) if pair.input is not None else None
        if clean is None or (pair.input is not None and (degraded is None or degraded.shape != clean.shape)):
            return None
        size = self.patch_size
        clean = pad_to(clean, size)
        top = int(rng.integers(0, clean.shape[0] - size + 1))
        left = int(rng.integers(0, clean.shape[1] - size + 1))
        clean = clean[top:top + size, left:left + size]
        if self.identity and rng.random() < self.identity:
            degraded = clean  # a clean patch under this prompt: the network learns to leave it alone
        elif degraded is None:
            degraded = synthesize(clean, pair.degradation, rng, self.synthesis)
        else:
            degraded = pad_to(degraded, size)[top:top + size, left:left + size]
        if self.flips:
            if rng.random() < 0.5:
                clean, degraded = clean[:, ::-1], degraded[:, ::-1]
            if rng.random() < 0.5:
                clean, degraded = clean[::-1], degraded[::-1]
        return _to_tensor(degraded), _to_tensor(clean)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


class GlobalBatchSampler:
    """This process's slice of each global batch, from ``start_step`` on, as ``(position, index)`` items.

    Positions run over a seeded permutation of the dataset per epoch; global batch ``s`` is positions
    ``s * global_batch ...``, and process ``rank`` of ``world_size`` takes its ``batch_size`` of them.
    """

    def __init__(self, length: int, batch_size: int, rank: int, world_size: int, seed: int, phase: int,
                 start_step: int, steps: int) -> None:
        self.length = length
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.phase = phase
        self.start_step = start_step
        self.steps = steps
        self._epoch = -1
        self._order: torch.Tensor | None = None

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.length)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.phase * 10_007 + epoch)
            self._order, self._epoch = torch.randperm(self.length, generator=generator), epoch
        assert self._order is not None  # set on the first call: _epoch starts at -1
        return int(self._order[offset])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps):
            first = step * global_batch + self.rank * self.batch_size
            yield [(position, self._index(position)) for position in range(first, first + self.batch_size)]


def steps_for_epochs(epochs: float, length: int, global_batch: int) -> int:
    return max(1, math.ceil(epochs * length / global_batch))


def validation_images(pairs: list[Pair], degradations: Sequence[str], size: int, seed: int,
                      synthesis: str = "classic") -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Held-out pairs as ``(task, degraded, clean)`` CHW tensors: centre crops of at most ``size``.

    Crops are multiples of 8 (the network's size rule); synthetic degradations use a fixed seed per
    pair, so every validation sees the same inputs.
    """
    task_index = {name: index for index, name in enumerate(degradations)}
    items = []
    for number, pair in enumerate(pairs):
        clean = read_image(pair.target)
        degraded = read_image(pair.input) if pair.input is not None else None
        if clean is None or (pair.input is not None and (degraded is None or degraded.shape != clean.shape)):
            continue
        height = min(size, clean.shape[0]) // 8 * 8
        width = min(size, clean.shape[1]) // 8 * 8
        if height < 8 or width < 8:
            continue
        top, left = (clean.shape[0] - height) // 2, (clean.shape[1] - width) // 2
        clean = clean[top:top + height, left:left + width]
        if degraded is None:
            degraded = synthesize(clean, pair.degradation, np.random.default_rng([seed, 104_729, number]), synthesis)
        else:
            degraded = degraded[top:top + height, left:left + width]
        items.append((task_index[pair.degradation], _to_tensor(degraded), _to_tensor(clean)))
    return items
