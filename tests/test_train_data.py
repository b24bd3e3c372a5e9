"""Training data: the reference layouts pair correctly, bad folders fail clearly, sampling is reproducible."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dfpir_cli.data.train_sets import (
    LAYOUTS,
    GlobalBatchSampler,
    PatchDataset,
    build_training_data,
    pair_layout,
    read_image,
    validation_images,
)
from dfpir_cli.errors import DatasetError


def write_image(path: Path, height: int = 40, width: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([np.sin(xx / 5 + seed), np.cos(yy / 4), np.sin((xx + yy) / 7)], -1) * 0.4 + 0.5
    image = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)
    cv2.imwrite(str(path), (image * 255).astype(np.uint8))
    return path


def test_rain100l_layout_pairs_rain_with_norain(tmp_path: Path) -> None:
    for i in (1, 2, 10):
        write_image(tmp_path / "rainy" / f"rain-{i}.png", seed=i)
        write_image(tmp_path / "gt" / f"norain-{i}.png", seed=i + 100)
    pairs = pair_layout(tmp_path, LAYOUTS["rain"])
    assert [(d.name, c.name) for d, c in pairs] == [("rain-1.png", "norain-1.png"), ("rain-2.png", "norain-2.png"),
                                                    ("rain-10.png", "norain-10.png")]


def test_ots_layout_pairs_many_hazy_versions_with_one_original(tmp_path: Path) -> None:
    write_image(tmp_path / "original" / "0001.jpg")
    write_image(tmp_path / "original" / "0002.jpg")
    for name in ("0001_0.8_0.2.jpg", "0001_0.9_0.16.jpg"):
        write_image(tmp_path / "synthetic" / "part1" / name)
    write_image(tmp_path / "synthetic" / "part2" / "0002_1_0.08.jpg")
    pairs = pair_layout(tmp_path, LAYOUTS["haze"])
    assert sorted((d.name, c.name) for d, c in pairs) == [("0001_0.8_0.2.jpg", "0001.jpg"),
                                                          ("0001_0.9_0.16.jpg", "0001.jpg"),
                                                          ("0002_1_0.08.jpg", "0002.jpg")]


def test_gopro_layout_pairs_within_each_scene(tmp_path: Path) -> None:
    for scene in ("GOPR0372_07_00", "GOPR0374_11_00"):
        write_image(tmp_path / "train" / scene / "blur" / "000047.png", seed=len(scene))
        write_image(tmp_path / "train" / scene / "sharp" / "000047.png", seed=len(scene))
    pairs = pair_layout(tmp_path, LAYOUTS["blur"])
    assert len(pairs) == 2
    assert all(d.parent.parent == c.parent.parent and d.name == c.name for d, c in pairs)


def test_missing_clean_images_are_named(tmp_path: Path) -> None:
    write_image(tmp_path / "low" / "1.png")
    write_image(tmp_path / "low" / "2.png")
    write_image(tmp_path / "high" / "1.png")
    with pytest.raises(DatasetError, match=r"(?s)1 degraded lowlight image.*low/2\.png -> .*high/2"):
        pair_layout(tmp_path, LAYOUTS["lowlight"])


def test_wrong_or_empty_folders_say_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "derain" / "something").mkdir(parents=True)
    with pytest.raises(DatasetError, match="rainy/ with gt/"):
        build_training_data(("rain",), data_root=tmp_path)
    with pytest.raises(DatasetError, match="--haze-dir"):
        build_training_data(("haze",), data_root=tmp_path)
    (tmp_path / "denoise").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        build_training_data(("noise25",), data_root=tmp_path)
    with pytest.raises(DatasetError, match="--clean-dir"):
        build_training_data(("noise25",))


def test_unreadable_mismatched_and_small_images_are_reported_and_the_rest_kept(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(4):
        write_image(root / "denoise" / f"{i}.png", seed=i)
    (root / "denoise" / "broken.png").write_bytes(b"not an image")
    write_image(root / "denoise" / "small.png", height=24, width=30)
    write_image(root / "derain" / "rainy" / "rain-1.png")
    write_image(root / "derain" / "gt" / "norain-1.png")
    write_image(root / "derain" / "rainy" / "rain-2.png", height=40, width=48)
    write_image(root / "derain" / "gt" / "norain-2.png", height=48, width=48)
    data = build_training_data(("noise15", "noise50", "rain"), data_root=root, patch_size=32, val_per_task=1)
    assert [p.name for p in data.report.unreadable] == ["broken.png"]
    assert [d.name for d, _ in data.report.mismatched] == ["rain-2.png"]
    assert [p.name for p in data.report.small] == ["small.png"]
    # 5 readable clean images, 1 held out: 4 per noise level; the one good rain pair stays for training.
    assert data.counts() == {"noise15": (4, 1), "noise50": (4, 1), "rain": (1, 0)}
    # The held-out clean image is held out for every noise level and never trained on.
    held_out = {pair.target for pair in data.val}
    assert len(held_out) == 1 and not held_out & {pair.target for pair in data.train}


def test_held_out_scene_leaves_training_with_all_its_hazy_versions(tmp_path: Path) -> None:
    for scene in range(4):
        write_image(tmp_path / "original" / f"{scene:04d}.png", seed=scene)
        for beta in (1, 2, 3):
            write_image(tmp_path / "synthetic" / f"{scene:04d}_0.8_{beta}.png", seed=scene)
    data = build_training_data(("haze",), folders={"haze": tmp_path}, patch_size=32, val_per_task=1, seed=3)
    assert data.counts() == {"haze": (9, 1)}
    assert data.val[0].target not in {pair.target for pair in data.train}


def test_clean_dir_serves_every_degradation_and_repeat_multiplies(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / f"photo{i}.jpg", seed=i)
    data = build_training_data(("noise25", "rain", "lowlight"), clean_dir=tmp_path, patch_size=32, val_per_task=1,
                               repeat={"rain": 3})
    assert data.counts() == {"noise25": (2, 1), "rain": (6, 1), "lowlight": (2, 1)}
    assert all(pair.input is None for pair in data.train)


def test_real_pairs_join_a_degradations_synthesised_data(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "clean" / f"photo{i}.jpg", seed=i)
    for i in range(4):  # PolyU's layout: the same name in real/ and mean/
        write_image(tmp_path / "polyu" / "real" / f"Canon_{i}.JPG", seed=i + 10)
        write_image(tmp_path / "polyu" / "mean" / f"Canon_{i}.JPG", seed=i + 20)
    write_image(tmp_path / "pairs" / "input" / "a.png", seed=1)
    write_image(tmp_path / "pairs" / "target" / "a.png", seed=2)
    data = build_training_data(("noise15", "rain"), clean_dir=tmp_path / "clean", patch_size=32, val_per_task=1,
                               pairs={"noise15": tmp_path / "polyu"}, pairs_repeat=5)
    assert data.counts() == {"noise15": (2 + 3 * 5, 2), "rain": (2, 1)}
    real = [pair for pair in data.train if pair.input is not None]
    assert len(real) == 15 and all(pair.input.parent.name == "real" and pair.target.parent.name == "mean"
                                   and pair.input.name == pair.target.name for pair in real)
    alone = build_training_data(("noise15",), pairs={"noise15": tmp_path / "pairs"}, patch_size=32, val_per_task=0)
    assert [(pair.input.name, pair.target.parent.name) for pair in alone.train] == [("a.png", "target")]
    with pytest.raises(DatasetError, match="rain is not one of the degradations"):
        build_training_data(("noise15",), clean_dir=tmp_path / "clean", pairs={"rain": tmp_path / "pairs"})
    with pytest.raises(DatasetError, match="no degraded/clean pairs found. Expected input/NAME with target/NAME"):
        build_training_data(("noise15",), clean_dir=tmp_path / "clean", pairs={"noise15": tmp_path / "clean"})
    with pytest.raises(DatasetError, match="does not exist"):
        build_training_data(("noise15",), pairs={"noise15": tmp_path / "nowhere"})


def test_samples_are_reproducible_synthesised_and_padded(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", height=24, width=30)
    write_image(tmp_path / "b.png", height=64, width=64, seed=2)
    data = build_training_data(("haze", "noise50"), clean_dir=tmp_path, patch_size=32, val_per_task=0)
    dataset = PatchDataset(data.train, ("haze", "noise50"), 32, seed=5, phase=0)
    first = dataset[(7, 0)]
    again = dataset[(7, 0)]
    other = dataset[(8, 0)]
    assert first[0].shape == first[1].shape == (3, 32, 32)  # the 24x30 image is padded up to the patch
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    degraded, clean, task, bad = dataset[(3, 3)]
    assert task == 1 and bad == 0 and (degraded - clean).abs().mean() > 0.05  # noise sigma 50


def test_identity_share_gives_clean_inputs_and_the_synthesis_model_is_used(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", height=64, width=64)
    data = build_training_data(("rain",), clean_dir=tmp_path, patch_size=32, val_per_task=0)
    plain = PatchDataset(data.train, ("rain",), 32, seed=1, phase=0, synthesis="realistic")
    mixed = PatchDataset(data.train, ("rain",), 32, seed=1, phase=0, synthesis="realistic", identity=0.5)
    unchanged = [torch.equal(*mixed[(position, 0)][:2]) for position in range(40)]
    assert 8 < sum(unchanged) < 32  # about half the patches are clean -> clean
    assert not any(torch.equal(*plain[(position, 0)][:2]) for position in range(10))
    classic = PatchDataset(data.train, ("rain",), 32, seed=1, phase=0)
    assert not torch.equal(classic[(0, 0)][0], plain[(0, 0)][0])


def test_unreadable_file_during_training_is_stepped_over(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png", seed=1)
    data = build_training_data(("noise25",), clean_dir=tmp_path, patch_size=32, val_per_task=0)
    data.train[0].target.write_bytes(b"corrupted after the scan")
    assert read_image(data.train[0].target) is None
    degraded, clean, task, bad = PatchDataset(data.train, ("noise25",), 32, seed=0, phase=0)[(0, 0)]
    assert bad == 1 and clean.shape == (3, 32, 32)


def test_global_batches_do_not_depend_on_the_number_of_processes() -> None:
    def batches(world: int, batch: int, start: int = 0) -> list[list[tuple[int, int]]]:
        per_rank = [list(GlobalBatchSampler(11, batch, rank, world, seed=4, phase=0, start_step=start, steps=9))
                    for rank in range(world)]
        return [sum((per_rank[rank][step] for rank in range(world)), []) for step in range(9 - start)]

    one = batches(1, 4)
    assert one == batches(2, 2) == batches(4, 1)
    assert batches(2, 2, start=5) == one[5:]  # resuming at a step needs only the step
    # Each epoch is a permutation: every pair once per 11 positions.
    indices = [index for batch in one for _, index in batch]
    assert sorted(indices[:11]) == list(range(11)) and sorted(indices[11:22]) == list(range(11))
    assert indices[:11] != indices[11:22]


def test_validation_images_are_fixed_centre_crops(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", height=44, width=60)
    write_image(tmp_path / "b.png", seed=1)
    data = build_training_data(("rain",), clean_dir=tmp_path, patch_size=32, val_per_task=1)
    first = validation_images(data.val, ("rain",), 256, seed=0)
    second = validation_images(data.val, ("rain",), 256, seed=0)
    (task, degraded, clean), = first
    assert task == 0 and degraded.shape[1] % 8 == 0 and degraded.shape[2] % 8 == 0
    assert torch.equal(degraded, second[0][1]) and not torch.equal(degraded, clean)
