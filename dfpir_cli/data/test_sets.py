"""Test sets of the paper's benchmarks: find their files in the layouts in use and pair inputs with targets.

DESIGN.md section 5 and issue 4. Every finder takes the dataset's folder, recognises the layouts below
(case-insensitive folder names), pairs files by name and returns a :class:`TestSet`; a folder that fits no
layout raises a :class:`DatasetError` that says what was expected and what was found.

- ``SOTS`` (outdoor, dehaze): ``input/NNNN_a_b.png`` with ``target/NNNN.png`` (the reference code's),
  ``hazy/`` with ``gt/`` or ``clear/`` (RESIDE's), or same-name ``IN/`` with ``GT/``. Also found under
  ``outdoor/``.
- ``Rain100L`` (derain): ``input/rain-N.png`` with ``target/norain-N.png``, or ``target/`` files with the
  input's own name (``rainy/``/``norain/`` also accepted).
- ``CBSD68``, ``Urban100`` (denoise): a folder of clean images (directly, or in ``original_png/``,
  ``original/``, ``clean/``, ``gt/``, ``HR/``, ``target/``); the noisy inputs are made at evaluation time
  by the paper's protocol (:func:`dfpir_cli.data.synthesis.add_gaussian_noise_uint8`).
- ``GoPro`` (deblur): ``blur/`` with ``sharp/``, either at the root (or ``test/``) or once per scene folder
  (``test/GOPR0384_11_00/blur/000001.png``), files paired by their path under ``blur/``.
- ``LOL`` (v1, low light): ``low/`` with ``high/``, at the root or in ``eval15/`` or ``test/``.
- ``paired``: any two folders, files paired by name (:func:`pair_by_stem`).

``--tasks 3|5`` reads the paper's suite from one root holding the datasets in sub-folders; the names
accepted for each are in :data:`SUITE_FOLDERS` (first match wins, case-insensitive): ``SOTS``,
``Rain100L``, ``CBSD68``, plus ``GoPro`` and ``LOL`` for 5 tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .photos import SHIPPED_PHOTOS, SYNTHETIC_SIZE, shipped_photos

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Sub-folders of a --tasks root, per dataset, first match wins (case-insensitive).
SUITE_FOLDERS: dict[str, tuple[str, ...]] = {
    "SOTS": ("SOTS", "SOTS-outdoor", "SOTS_outdoor", "outdoor", "dehaze"),
    "Rain100L": ("Rain100L", "rain100l", "derain"),
    "CBSD68": ("CBSD68", "cbsd68", "denoise"),
    "Urban100": ("Urban100",),
    "GoPro": ("GoPro", "GOPRO_Large", "deblur"),
    "LOL": ("LOL", "LOL-v1", "LOLv1", "LOLdataset", "lowlight"),
}

# The paper's suites: (dataset, noise sigma or None) in the order of its tables (DESIGN.md section 5).
SUITES: dict[int, tuple[tuple[str, int | None], ...]] = {
    3: (("SOTS", None), ("Rain100L", None), ("CBSD68", 15), ("CBSD68", 25), ("CBSD68", 50)),
    5: (("SOTS", None), ("Rain100L", None), ("CBSD68", 25), ("GoPro", None), ("LOL", None)),
}

DEFAULT_SIGMAS = (15, 25, 50)
DATASET_NAMES = ("SOTS", "Rain100L", "CBSD68", "Urban100", "GoPro", "LOL", "all", "paired", "synthetic")


@dataclass(frozen=True)
class Pair:
    """One test image: its degraded input (None when made from the target) and its clean target."""

    name: str  # shown in reports: the input's path under its folder
    input: Path | None
    target: Path


@dataclass(frozen=True)
class TestSet:
    """The pairs of one dataset and task, with how they were found."""

    __test__ = False  # not a pytest test class despite the name

    dataset: str  # "SOTS", "Rain100L", "CBSD68", ..., "paired", "synthetic"
    degradation: str  # the canonical degradation name whose prompt restores it
    pairs: tuple[Pair, ...]
    layout: str  # which layout was recognised, for the report
    noise_sigma: int | None = None  # inputs made from targets by the paper's 8-bit noise protocol
    unpaired: tuple[str, ...] = ()  # files that found no partner, each with the reason
    extra: dict[str, int] = field(default_factory=dict)  # finder-specific details (synthetic: seed, size)

    @property
    def label(self) -> str:
        """The row label of reports: the dataset, with the noise level where there is one."""
        if self.noise_sigma is not None:
            return f"{self.dataset} sigma={self.noise_sigma}"
        return f"synthetic {self.degradation}" if self.dataset == "synthetic" else self.dataset


@dataclass(frozen=True)
class Pairing:
    """What :func:`pair_by_stem` found: the pairs and the files left without a partner."""

    pairs: tuple[tuple[Path, Path], ...]
    unpaired_inputs: tuple[Path, ...]
    unpaired_targets: tuple[Path, ...]


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted by path; hidden files skipped)."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _relative_stem(path: Path, folder: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def pair_by_stem(input_dir: Path, target_dir: Path, input_key: Callable[[str], str] | None = None,
                 target_key: Callable[[str], str] | None = None, recursive: bool = False) -> Pairing:
    """Pair each image of ``input_dir`` with the image of ``target_dir`` whose key is the same.

    A file's key is its path under its folder without the extension (``a/0001``), passed through
    ``input_key`` / ``target_key`` when given (for example ``lambda s: s.split("_")[0]`` maps a SOTS
    input ``0001_0.8_0.2`` to its target ``0001``). Several inputs may share one target (RESIDE has
    several hazy images per clear one). Two targets with one key are ambiguous: the first (sorted) is used
    and the others are reported unpaired. Extensions may differ (``rain-1.jpg`` with ``norain-1.png``).
    """
    input_key = input_key or (lambda stem: stem)
    target_key = target_key or (lambda stem: stem)
    targets: dict[str, Path] = {}
    unpaired_targets: list[Path] = []
    for path in list_images(target_dir, recursive):
        key = target_key(_relative_stem(path, target_dir))
        if key in targets:
            unpaired_targets.append(path)
        else:
            targets[key] = path
    pairs, unpaired_inputs, used = [], [], set()
    for path in list_images(input_dir, recursive):
        key = input_key(_relative_stem(path, input_dir))
        if key in targets:
            pairs.append((path, targets[key]))
            used.add(key)
        else:
            unpaired_inputs.append(path)
    unpaired_targets.extend(path for key, path in targets.items() if key not in used)
    return Pairing(tuple(pairs), tuple(unpaired_inputs), tuple(sorted(unpaired_targets)))


def _child(folder: Path, names: Iterable[str]) -> Path | None:
    """The first sub-folder of ``folder`` whose name is one of ``names`` (case-insensitive)."""
    if not folder.is_dir():
        return None
    children = {child.name.lower(): child for child in sorted(folder.iterdir()) if child.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def _found(folder: Path) -> str:
    """What a folder holds, briefly, for error messages."""
    if not folder.exists():
        return f"{folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    entries = sorted(folder.iterdir())
    dirs = [f"{p.name}/" for p in entries if p.is_dir()]
    images = [p.name for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    others = [p.name for p in entries if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS]

    def show(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")

    parts = []
    if dirs:
        parts.append(f"folders {show(dirs)}")
    if images:
        parts.append(f"{len(images)} images ({show(images)})")
    if others:
        parts.append(f"other files {show(others)}")
    return f"{folder} holds " + ("; ".join(parts) if parts else "nothing")


def _describe_unpaired(pairing: Pairing, input_dir: Path, target_dir: Path) -> tuple[str, ...]:
    return (tuple(f"{p.relative_to(input_dir).as_posix()} (input in {input_dir.name}/): no target"
                  for p in pairing.unpaired_inputs)
            + tuple(f"{p.relative_to(target_dir).as_posix()} (target in {target_dir.name}/): no input"
                    for p in pairing.unpaired_targets))


def _paired_set(dataset: str, degradation: str, input_dir: Path, target_dir: Path, layout: str,
                input_key: Callable[[str], str] | None = None, target_key: Callable[[str], str] | None = None,
                recursive: bool = False) -> TestSet:
    pairing = pair_by_stem(input_dir, target_dir, input_key, target_key, recursive)
    if not pairing.pairs:
        inputs, targets = list_images(input_dir, recursive), list_images(target_dir, recursive)
        example_in = inputs[0].relative_to(input_dir).as_posix() if inputs else None
        example_target = targets[0].relative_to(target_dir).as_posix() if targets else None
        raise DatasetError(
            f"{dataset}: no input in {input_dir} has a target in {target_dir} (layout: {layout}). "
            f"Found {len(inputs)} inputs (e.g. {example_in}) and {len(targets)} targets (e.g. {example_target}).")
    pairs = tuple(Pair(inp.relative_to(input_dir).as_posix(), inp, tgt) for inp, tgt in pairing.pairs)
    return TestSet(dataset, degradation, pairs, layout,
                   unpaired=_describe_unpaired(pairing, input_dir, target_dir))


def _sots_key(stem: str) -> str:
    """``0001_0.8_0.2`` -> ``0001`` (RESIDE names a hazy image after its clear one, airlight and beta)."""
    head, _, name = stem.rpartition("/")
    return (head + "/" if head else "") + name.split("_")[0]


def find_sots(root: Path) -> TestSet:
    """SOTS outdoor: ``input/``+``target/`` (reference), ``hazy/``+``gt/``|``clear/`` (RESIDE), or ``IN/``+``GT/``."""
    for folder in (root, root / "outdoor", root / "SOTS" / "outdoor", root / "SOTS"):
        for inputs, targets in ((("input",), ("target",)), (("hazy",), ("gt", "clear", "target")),
                                (("IN",), ("GT",))):
            input_dir, target_dir = _child(folder, inputs), _child(folder, targets)
            if input_dir and target_dir:
                same_names = {p.stem for p in list_images(input_dir)} & {p.stem for p in list_images(target_dir)}
                key = None if same_names else _sots_key
                layout = (f"{input_dir.name}/ with {target_dir.name}/, "
                          + ("same file names" if same_names else "NNNN_a_b -> NNNN"))
                return _paired_set("SOTS", "haze", input_dir, target_dir, layout, key, key)
    raise DatasetError(
        f"SOTS: expected input/NNNN_a_b.png with target/NNNN.png (or hazy/ with gt/ or clear/, or IN/ with GT/, "
        f"possibly under outdoor/), but {_found(root)}")


def _rain_key(stem: str) -> str:
    """``rain-12`` and ``norain-12`` -> ``12``; other names are kept (same-name layout)."""
    for prefix in ("norain-", "norain_", "rain-", "rain_"):
        if stem.startswith(prefix):
            return stem[len(prefix):]
    return stem


def find_rain100l(root: Path) -> TestSet:
    """Rain100L: ``input/rain-N`` with ``target/norain-N`` or with ``target/`` files of the input's name."""
    for folder in (root, root / "test", root / "Rain100L"):
        input_dir = _child(folder, ("input", "rainy", "rain"))
        target_dir = _child(folder, ("target", "norain", "gt", "GT"))
        if input_dir and target_dir:
            names = [p.stem for p in list_images(target_dir)]
            naming = "norain-N targets" if any(n.startswith(("norain-", "norain_")) for n in names) else "same names"
            return _paired_set("Rain100L", "rain", input_dir, target_dir,
                               f"{input_dir.name}/ with {target_dir.name}/, {naming}", _rain_key, _rain_key)
    raise DatasetError(
        f"Rain100L: expected input/rain-N.png with target/norain-N.png (or target/ files named like the inputs; "
        f"rainy/ and norain/ also accepted), but {_found(root)}")


CLEAN_FOLDERS = ("original_png", "original", "clean", "gt", "GT", "HR", "target", "images")


def find_clean_folder(dataset: str, root: Path, sigmas: Sequence[int]) -> list[TestSet]:
    """CBSD68 / Urban100: clean images, one :class:`TestSet` per noise sigma (inputs made at evaluation)."""
    folder = root if root.is_dir() and list_images(root) else _child(root, CLEAN_FOLDERS)
    if folder is None or not list_images(folder):
        raise DatasetError(
            f"{dataset}: expected a folder of clean images (directly, or in one of "
            f"{', '.join(f + '/' for f in CLEAN_FOLDERS)}), but {_found(root)}")
    targets = list_images(folder)
    where = "images at the root" if folder == root else f"images in {folder.name}/"
    pairs = tuple(Pair(path.name, None, path) for path in targets)
    for sigma in sigmas:
        if not 0 < sigma <= 255:
            raise DatasetError(f"noise sigma must be in 1..255 (8-bit scale), not {sigma}")
    return [TestSet(dataset, f"noise{sigma}", pairs, f"{where}, noise sigma {sigma} added with numpy seed 0",
                    noise_sigma=sigma) for sigma in sigmas]


def find_gopro(root: Path) -> TestSet:
    """GoPro: ``blur/`` with ``sharp/`` at the root (or ``test/``), or in every scene folder."""
    for folder in (root, root / "test", root / "GOPRO_Large" / "test"):
        blur, sharp = _child(folder, ("blur", "input")), _child(folder, ("sharp", "target"))
        if blur and sharp:
            return _paired_set("GoPro", "blur", blur, sharp, f"{blur.name}/ with {sharp.name}/, same names",
                               recursive=True)
    for folder in (root, root / "test", root / "GOPRO_Large" / "test"):
        scenes = [child for child in sorted(folder.iterdir()) if child.is_dir()
                  and _child(child, ("blur",)) and _child(child, ("sharp",))] if folder.is_dir() else []
        if scenes:
            pairs: list[Pair] = []
            unpaired: list[str] = []
            for scene in scenes:
                scene_blur, scene_sharp = _child(scene, ("blur",)), _child(scene, ("sharp",))
                assert scene_blur is not None and scene_sharp is not None  # scenes were chosen for having both
                part = _paired_set("GoPro", "blur", scene_blur, scene_sharp, "")
                pairs.extend(Pair(f"{scene.name}/{p.name}", p.input, p.target) for p in part.pairs)
                unpaired.extend(f"{scene.name}/{u}" for u in part.unpaired)
            return TestSet("GoPro", "blur", tuple(pairs), f"{len(scenes)} scene folders, each blur/ with sharp/",
                           unpaired=tuple(unpaired))
    raise DatasetError(
        f"GoPro: expected blur/ with sharp/ (at the root, in test/, or in each scene folder such as "
        f"test/GOPR0384_11_00/blur/), but {_found(root)}")


def find_lol(root: Path) -> TestSet:
    """LOL-v1: ``low/`` with ``high/`` at the root, in ``eval15/``, or in ``test/``."""
    for folder in (root, root / "eval15", root / "test", root / "LOLdataset" / "eval15"):
        low, high = _child(folder, ("low",)), _child(folder, ("high",))
        if low and high:
            return _paired_set("LOL", "lowlight", low, high, f"{low.relative_to(root).as_posix()}/ with "
                               f"{high.relative_to(root).as_posix()}/, same names")
    raise DatasetError(f"LOL: expected low/ with high/ (at the root, in eval15/ or in test/), but {_found(root)}")


def find_paired(input_dir: Path, target_dir: Path, degradation: str, dataset: str = "paired") -> TestSet:
    """Any two folders: each input paired with the target of the same name (extension may differ)."""
    for label, folder in (("--input-dir", input_dir), ("--target-dir", target_dir)):
        if not folder.is_dir():
            raise DatasetError(f"{label}: {_found(folder)}")
    return _paired_set(dataset, degradation, input_dir, target_dir,
                       f"{input_dir} with {target_dir}, paired by file name", recursive=True)


def find_dataset(name: str, root: Path, sigmas: Sequence[int] = DEFAULT_SIGMAS) -> list[TestSet]:
    """The test sets of a paper dataset at ``root`` (several for the noise datasets: one per sigma)."""
    canonical = {n.lower(): n for n in DATASET_NAMES}.get(name.lower())
    if canonical is None or canonical in ("all", "paired", "synthetic"):
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if not root.is_dir():
        raise DatasetError(f"{canonical}: {_found(root)}")
    if canonical == "SOTS":
        return [find_sots(root)]
    if canonical == "Rain100L":
        return [find_rain100l(root)]
    if canonical in ("CBSD68", "Urban100"):
        return find_clean_folder(canonical, root, sigmas)
    if canonical == "GoPro":
        return [find_gopro(root)]
    return [find_lol(root)]


def find_all(root: Path, sigmas: Sequence[int] = DEFAULT_SIGMAS) -> list[TestSet]:
    """Every paper dataset found in a sub-folder of ``root`` (:data:`SUITE_FOLDERS`), in the suite's order."""
    if not root.is_dir():
        raise DatasetError(f"--dataset all: {_found(root)}")
    sets: list[TestSet] = []
    for dataset, names in SUITE_FOLDERS.items():
        folder = _child(root, names)
        if folder is not None:
            sets.extend(find_dataset(dataset, folder, sigmas))
    if not sets:
        raise DatasetError(f"--dataset all found no test set under {root}: it looks for sub-folders named "
                           + "; ".join(f"{name} ({' or '.join(names[:2])})" for name, names in SUITE_FOLDERS.items())
                           + f". But {_found(root)}")
    return sets


def find_suite(root: Path, tasks: int) -> list[TestSet]:
    """The paper's 3- or 5-task suite from one root holding each dataset in a sub-folder (:data:`SUITE_FOLDERS`)."""
    if tasks not in SUITES:
        raise DatasetError(f"--tasks must be 3 or 5, not {tasks}")
    if not root.is_dir():
        raise DatasetError(f"--root: {_found(root)}")
    sets: list[TestSet] = []
    missing = []
    for dataset in dict.fromkeys(name for name, _ in SUITES[tasks]):
        folder = _child(root, SUITE_FOLDERS[dataset])
        if folder is None:
            missing.append(f"{dataset} (a sub-folder named {' or '.join(SUITE_FOLDERS[dataset])})")
            continue
        sigmas = [sigma for name, sigma in SUITES[tasks] if name == dataset and sigma is not None]
        sets.extend(find_dataset(dataset, folder, sigmas or DEFAULT_SIGMAS))
    if missing:
        raise DatasetError(f"the {tasks}-task suite needs, under {root}: " + "; ".join(missing)
                           + f". But {_found(root)}")
    return sets


def synthetic_sets(degradations: Sequence[str], images: Path | None = None, seed: int = 0,
                   size: int = SYNTHETIC_SIZE) -> list[TestSet]:
    """The built-in benchmark: clean photos (shipped, or ``images``) degraded by :mod:`dfpir_cli.data.synthesis`.

    One :class:`TestSet` per degradation; evaluation degrades each photo with a generator seeded by
    ``(seed, degradation, photo index)``, after scaling it (area) so its shorter side is ``size`` and
    centre-cropping it to ``size`` x ``size`` (``size`` 0 keeps the photo as it is).
    """
    if images is None:
        paths, where = shipped_photos(), f"scikit-image photos {', '.join(SHIPPED_PHOTOS)}"
    else:
        if not images.is_dir():
            raise DatasetError(f"--images: {_found(images)}")
        paths, where = list_images(images, recursive=True), f"clean photos in {images}"
        if not paths:
            raise DatasetError(f"--images: expected clean photos ({', '.join(IMAGE_EXTENSIONS)}), but "
                               f"{_found(images)}")
    if size < 0:
        raise DatasetError(f"the synthetic image size must be 0 (as is) or more, not {size}")
    shown = [p.relative_to(images).as_posix() for p in paths] if images is not None else list(SHIPPED_PHOTOS)
    pairs = tuple(Pair(name, None, path) for name, path in zip(shown, paths, strict=True))
    shape = f"{size}x{size} crops" if size else "full size"
    return [TestSet("synthetic", name, pairs, f"{where}, {shape}, degraded by dfpir_cli.data.synthesis with seed {seed}",
                    extra={"seed": seed, "size": size}) for name in degradations]
