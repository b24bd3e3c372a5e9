"""The datasets folder: where ``dfpir eval`` and ``dfpir train`` look when no data option is given.

The folder is ``$DFPIR_DATA``, else ``~/.cache/dfpir/data`` (:mod:`dfpir_cli.base.locations`). Its layout::

    SOTS/  Rain100L/  CBSD68/  Urban100/  GoPro/  LOL/            test sets (dfpir eval)
    train/denoise/  train/derain/  train/dehaze/  train/deblur/  train/lowlight/     training sets (dfpir train)

A set that is not there gives an error that says where it can be downloaded and where its files go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..base.locations import data_dir, data_dir_origin
from ..errors import DatasetError
from ..weights.prompts import DEGRADATIONS
from .test_sets import DATASET_NAMES, SUITE_FOLDERS, SUITES, _child
from .train_sets import LAYOUTS, NOISE_FOLDERS

TRAIN_FOLDER = "train"


@dataclass(frozen=True)
class SetInfo:
    name: str
    folder: str  # the sub-folder of the data folder it goes in
    source: str  # where it can be downloaded
    layout: str  # where its files go, under the folder


TEST_SETS: dict[str, SetInfo] = {info.name: info for info in (
    SetInfo("SOTS", "SOTS", "RESIDE, SOTS outdoor test set: https://sites.google.com/view/reside-dehaze-datasets",
            "SOTS/input/0001_0.8_0.2.png ... with SOTS/target/0001.png ... (RESIDE's own SOTS/outdoor/hazy/ with "
            "SOTS/outdoor/gt/ also works)"),
    SetInfo("Rain100L", "Rain100L", "Rain100L test split (100 pairs), e.g. from the PReNet repository's datasets "
            "(https://github.com/csdwren/PReNet)",
            "Rain100L/input/rain-001.png ... with Rain100L/target/norain-001.png ..."),
    SetInfo("CBSD68", "CBSD68", "https://github.com/clausmichele/CBSD68-dataset (the clean 'original_png' images)",
            "CBSD68/*.png (clean images; the noise is added at evaluation time)"),
    SetInfo("Urban100", "Urban100", "https://github.com/jbhuang0604/SelfExSR (Urban100 HR images)",
            "Urban100/*.png (clean images)"),
    SetInfo("GoPro", "GoPro", "https://seungjunnah.github.io/Datasets/gopro (GOPRO_Large)",
            "GoPro/test/GOPR0384_11_00/blur/000001.png ... with .../sharp/000001.png ... (one folder per scene)"),
    SetInfo("LOL", "LOL", "LOL-v1: https://daooshee.github.io/BMVC2018website/",
            "LOL/eval15/low/1.png ... with LOL/eval15/high/1.png ..."),
)}

# The paper's training sets (DESIGN.md section 4), one folder per degradation family under train/.
TRAIN_SETS: dict[str, SetInfo] = {info.name: info for info in (
    SetInfo("noise", "denoise", "BSD400 and WED clean images (Waterloo Exploration Database: "
            "https://ece.uwaterloo.ca/~k29ma/exploration/)",
            "train/denoise/*.png (clean images; noise sigma 15/25/50 is added on the fly)"),
    SetInfo("rain", "derain", "Rain100L training split (200 pairs): "
            "https://www.icst.pku.edu.cn/struct/Projects/joint_rain_removal.html",
            "train/derain/rainy/rain-1.png ... with train/derain/gt/norain-1.png ..."),
    SetInfo("haze", "dehaze", "RESIDE OTS (outdoor training set): https://sites.google.com/view/reside-dehaze-datasets",
            "train/dehaze/synthetic/0005_0.8_0.04.jpg ... with train/dehaze/original/0005.jpg ..."),
    SetInfo("blur", "deblur", "GoPro training split: https://seungjunnah.github.io/Datasets/gopro",
            "train/deblur/GOPR0372_07_00/blur/000047.png ... with .../sharp/000047.png ... (or blur/ + sharp/)"),
    SetInfo("lowlight", "lowlight", "LOL-v1 our485: https://daooshee.github.io/BMVC2018website/",
            "train/lowlight/low/2.png ... with train/lowlight/high/2.png ..."),
)}


def _where() -> str:
    return f"the datasets folder {data_dir()} ({data_dir_origin()})"


def _instructions(infos: Sequence[SetInfo]) -> str:
    return "\n".join(f"  {info.name}: download from {info.source}\n    files go to {data_dir() / info.layout}"
                     for info in infos)


def dataset_folder(name: str) -> Path:
    """The folder of test set ``name`` in the datasets folder; an error says how to get it there."""
    canonical = {n.lower(): n for n in DATASET_NAMES}.get(name.lower())
    if canonical not in TEST_SETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    folder = _child(data_dir(), SUITE_FOLDERS[canonical])
    if folder is None:
        raise DatasetError(f"{canonical} is not in {_where()}, and no --root was given. Get it:\n"
                           f"{_instructions([TEST_SETS[canonical]])}\n"
                           f"or pass --root with the folder where it already is.")
    return folder


def suite_root(tasks: int) -> Path:
    """The datasets folder when it holds every test set of the paper's ``tasks``-task suite."""
    names = list(dict.fromkeys(name for name, _ in SUITES.get(tasks, ())))
    found = [name for name in names if _child(data_dir(), SUITE_FOLDERS[name]) is not None]
    missing = [name for name in names if name not in found]
    if missing:
        raise DatasetError(f"the {tasks}-task test suite is not complete in {_where()}, and no --root was given. "
                           f"Found: {', '.join(found) or 'none'}. Missing: {', '.join(missing)}. Get them:\n"
                           f"{_instructions([TEST_SETS[name] for name in missing])}\n"
                           "or pass --root with a folder holding them, or evaluate one with --dataset NAME.")
    return data_dir()


@dataclass(frozen=True)
class TrainingFolders:
    root: Path  # <datasets folder>/train
    found: dict[str, Path]  # family -> folder
    missing: tuple[str, ...]  # families


def training_folders(degradations: Sequence[str]) -> TrainingFolders:
    """Which of the families of ``degradations`` have a training folder under ``<datasets folder>/train``.

    The folder names are the ones ``--data-root`` accepts (``denoise``, ``derain``, ``dehaze``, ``deblur``,
    ``lowlight`` and their alternatives such as ``Rain100L``, ``OTS``, ``GoPro``, ``LOL``).
    """
    root = data_dir() / TRAIN_FOLDER
    families = list(dict.fromkeys(DEGRADATIONS[name].family for name in degradations))
    found: dict[str, Path] = {}
    for family in families:
        folder = _child(root, NOISE_FOLDERS if family == "noise" else LAYOUTS[family].folders)
        if folder is not None:
            found[family] = folder
    return TrainingFolders(root, found, tuple(family for family in families if family not in found))


def require_training_folders(degradations: Sequence[str]) -> TrainingFolders:
    """:func:`training_folders`, or an error naming what was found, what is missing and how to get it."""
    folders = training_folders(degradations)
    if folders.missing:
        found = ", ".join(f"{family} ({path})" for family, path in folders.found.items()) or "none"
        raise DatasetError(
            f"no data option was given, so dfpir looked for the paper's training sets in {folders.root} (under "
            f"{_where()}). Found: {found}. Missing: {', '.join(folders.missing)}. Get them:\n"
            f"{_instructions([TRAIN_SETS[family] for family in folders.missing])}\n"
            "or pass --data-root, --noise-dir/--rain-dir/--haze-dir/--blur-dir/--lowlight-dir, or --clean-dir "
            "(synthesise every degradation from your own clean photos).")
    return folders
