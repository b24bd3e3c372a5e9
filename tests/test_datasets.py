"""Test-set layouts on disk: each is recognised, paired right, and a wrong folder gets a clear message."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dfpir_cli.data.photos import SHIPPED_PHOTOS, shipped_photos
from dfpir_cli.data.test_sets import (
    find_dataset,
    find_paired,
    find_suite,
    pair_by_stem,
    synthetic_sets,
)
from dfpir_cli.errors import DatasetError


def write(path: Path, value: int = 100, size: tuple[int, int] = (24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((*size, 3), value, dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def names(test_set) -> list[tuple[str, str | None, str]]:
    return [(p.name, p.input.name if p.input else None, p.target.name) for p in test_set.pairs]


def test_sots_reference_layout_pairs_hazy_with_clear(tmp_path: Path) -> None:
    write(tmp_path / "input" / "0001_0.8_0.2.png")
    write(tmp_path / "input" / "0002_1_0.16.jpg")
    write(tmp_path / "input" / "0003_0.9_0.1.png")  # no target
    write(tmp_path / "target" / "0001.png")
    write(tmp_path / "target" / "0002.png")
    (sots,) = find_dataset("sots", tmp_path)
    assert sots.degradation == "haze" and sots.dataset == "SOTS"
    assert names(sots) == [("0001_0.8_0.2.png", "0001_0.8_0.2.png", "0001.png"),
                           ("0002_1_0.16.jpg", "0002_1_0.16.jpg", "0002.png")]
    assert sots.unpaired == ("0003_0.9_0.1.png (input in input/): no target",)


def test_sots_same_name_in_gt_under_outdoor(tmp_path: Path) -> None:
    for name in ("a_1.png", "b_2.png"):
        write(tmp_path / "outdoor" / "IN" / name)
        write(tmp_path / "outdoor" / "GT" / name)
    (sots,) = find_dataset("SOTS", tmp_path)
    assert names(sots) == [("a_1.png", "a_1.png", "a_1.png"), ("b_2.png", "b_2.png", "b_2.png")]
    assert "same file names" in sots.layout


@pytest.mark.parametrize("target_name", ["norain-{}.png", "rain-{}.png"])
def test_rain100l_both_namings(tmp_path: Path, target_name: str) -> None:
    for n in (1, 2, 10):
        write(tmp_path / "input" / f"rain-{n}.png")
        write(tmp_path / "target" / target_name.format(n))
    (rain,) = find_dataset("Rain100L", tmp_path)
    assert rain.degradation == "rain" and len(rain.pairs) == 3 and not rain.unpaired
    assert [(p.input.name, p.target.name) for p in rain.pairs] == [
        (f"rain-{n}.png", target_name.format(n)) for n in (1, 10, 2)]


def test_noise_datasets_are_clean_folders_with_one_set_per_sigma(tmp_path: Path) -> None:
    for name in ("b.png", "a.png"):
        write(tmp_path / "CBSD68" / "original_png" / name)
        write(tmp_path / "Urban100" / name)
    cbsd = find_dataset("CBSD68", tmp_path / "CBSD68")
    assert [(s.noise_sigma, s.degradation, s.label) for s in cbsd] == [
        (15, "noise15", "CBSD68 sigma=15"), (25, "noise25", "CBSD68 sigma=25"), (50, "noise50", "CBSD68 sigma=50")]
    assert names(cbsd[0]) == [("a.png", None, "a.png"), ("b.png", None, "b.png")]
    (urban,) = find_dataset("urban100", tmp_path / "Urban100", sigmas=[25])
    assert urban.noise_sigma == 25 and len(urban.pairs) == 2
    with pytest.raises(DatasetError, match="1..255"):
        find_dataset("CBSD68", tmp_path / "CBSD68", sigmas=[0])


def test_gopro_flat_and_per_scene(tmp_path: Path) -> None:
    for scene in ("GOPR0384_11_00", "GOPR0385_11_01"):
        for frame in ("000001.png", "000002.png"):
            write(tmp_path / "scenes" / "test" / scene / "blur" / frame)
            write(tmp_path / "scenes" / "test" / scene / "sharp" / frame)
    (gopro,) = find_dataset("GoPro", tmp_path / "scenes")
    assert [p.name for p in gopro.pairs] == ["GOPR0384_11_00/000001.png", "GOPR0384_11_00/000002.png",
                                             "GOPR0385_11_01/000001.png", "GOPR0385_11_01/000002.png"]
    assert all(p.input.parent.name == "blur" and p.target.parent.name == "sharp" for p in gopro.pairs)
    write(tmp_path / "flat" / "blur" / "x.png")
    write(tmp_path / "flat" / "sharp" / "x.png")
    (flat,) = find_dataset("gopro", tmp_path / "flat")
    assert names(flat) == [("x.png", "x.png", "x.png")] and flat.degradation == "blur"


def test_lol_in_eval15(tmp_path: Path) -> None:
    write(tmp_path / "eval15" / "low" / "1.png")
    write(tmp_path / "eval15" / "high" / "1.png")
    (lol,) = find_dataset("LOL", tmp_path)
    assert names(lol) == [("1.png", "1.png", "1.png")] and lol.degradation == "lowlight"


def test_paired_reports_unpaired_files_on_both_sides(tmp_path: Path) -> None:
    write(tmp_path / "A" / "one.jpg")
    write(tmp_path / "A" / "two.png")
    write(tmp_path / "A" / "sub" / "three.png")
    write(tmp_path / "B" / "one.png")
    write(tmp_path / "B" / "sub" / "three.png")
    write(tmp_path / "B" / "four.png")
    (tmp_path / "A" / "notes.txt").write_text("not an image")
    paired = find_paired(tmp_path / "A", tmp_path / "B", "rain")
    assert [p.name for p in paired.pairs] == ["one.jpg", "sub/three.png"]
    assert paired.unpaired == ("two.png (input in A/): no target", "four.png (target in B/): no input")
    with pytest.raises(DatasetError, match="--target-dir: .*does not exist"):
        find_paired(tmp_path / "A", tmp_path / "missing", "rain")


def test_pair_by_stem_keys_and_ambiguous_targets(tmp_path: Path) -> None:
    write(tmp_path / "in" / "7_0.9_0.1.png")
    write(tmp_path / "in" / "7_0.8_0.2.png")
    write(tmp_path / "gt" / "7.png")
    write(tmp_path / "gt" / "7.jpg")  # same key as 7.png: ambiguous, reported

    def key(stem: str) -> str:
        return stem.split("_")[0]

    pairing = pair_by_stem(tmp_path / "in", tmp_path / "gt", key, key)
    assert [(a.name, b.name) for a, b in pairing.pairs] == [("7_0.8_0.2.png", "7.jpg"), ("7_0.9_0.1.png", "7.jpg")]
    assert [p.name for p in pairing.unpaired_targets] == ["7.png"] and not pairing.unpaired_inputs


def test_layout_mismatch_says_what_was_expected_and_found(tmp_path: Path) -> None:
    write(tmp_path / "hazy_images" / "1.png")
    write(tmp_path / "readme.png")
    with pytest.raises(DatasetError) as error:
        find_dataset("SOTS", tmp_path)
    message = str(error.value)
    assert "expected input/NNNN_a_b.png with target/NNNN.png" in message
    assert "hazy_images/" in message and "readme.png" in message
    with pytest.raises(DatasetError, match="expected input/rain-N.png"):
        find_dataset("Rain100L", tmp_path)
    with pytest.raises(DatasetError, match="expected blur/ with sharp/"):
        find_dataset("GoPro", tmp_path)
    with pytest.raises(DatasetError, match="expected low/ with high/"):
        find_dataset("LOL", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        find_dataset("LOL", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="unknown dataset"):
        find_dataset("ImageNet", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="folder of clean images.*holds nothing"):
        find_dataset("CBSD68", tmp_path / "empty")


def test_targets_missing_for_every_input(tmp_path: Path) -> None:
    write(tmp_path / "input" / "rain-1.png")
    write(tmp_path / "target" / "other.png")
    with pytest.raises(DatasetError, match="no input .* has a target"):
        find_dataset("Rain100L", tmp_path)


def _suite_root(root: Path, five: bool) -> Path:
    write(root / "SOTS" / "outdoor" / "input" / "0001_0.8_0.2.png")
    write(root / "SOTS" / "outdoor" / "target" / "0001.png")
    write(root / "Rain100L" / "input" / "rain-1.png")
    write(root / "Rain100L" / "target" / "norain-1.png")
    write(root / "cbsd68" / "a.png")
    if five:
        write(root / "GoPro" / "test" / "GOPR0001" / "blur" / "1.png")
        write(root / "GoPro" / "test" / "GOPR0001" / "sharp" / "1.png")
        write(root / "LOL" / "eval15" / "low" / "1.png")
        write(root / "LOL" / "eval15" / "high" / "1.png")
    return root


def test_suites_from_one_root(tmp_path: Path) -> None:
    three = find_suite(_suite_root(tmp_path / "three", False), 3)
    assert [s.label for s in three] == ["SOTS", "Rain100L", "CBSD68 sigma=15", "CBSD68 sigma=25", "CBSD68 sigma=50"]
    five = find_suite(_suite_root(tmp_path / "five", True), 5)
    assert [s.label for s in five] == ["SOTS", "Rain100L", "CBSD68 sigma=25", "GoPro", "LOL"]
    with pytest.raises(DatasetError, match="GoPro .*LOL"):
        find_suite(tmp_path / "three", 5)


def test_synthetic_sets_use_photos_shipped_with_scikit_image(tmp_path: Path) -> None:
    photos = shipped_photos()
    assert len(photos) == len(SHIPPED_PHOTOS) and all(p.is_file() for p in photos)
    sets = synthetic_sets(["rain", "haze"])
    assert [s.label for s in sets] == ["synthetic rain", "synthetic haze"]
    assert [p.name for p in sets[0].pairs] == list(SHIPPED_PHOTOS)
    write(tmp_path / "mine" / "x.png")
    (own,) = synthetic_sets(["blur"], tmp_path / "mine", seed=3, size=0)
    assert names(own) == [("x.png", None, "x.png")] and own.extra == {"seed": 3, "size": 0}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="expected clean photos"):
        synthetic_sets(["blur"], tmp_path / "empty")
