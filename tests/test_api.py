"""The Python API: the same restorations as `dfpir restore`, the same kind of image back, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import dfpir_cli
import dfpir_cli.api as api
from dfpir_cli import DfpirError, DFPIRRestorer, restore_image
from dfpir_cli.cli import app
from dfpir_cli.detect import Detection
from dfpir_cli.errors import InputError, UnknownDegradationError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


@pytest.fixture(scope="module")
def default() -> DFPIRRestorer:
    """The embedded default model, as `dfpir restore` with no --weights loads it."""
    return DFPIRRestorer(device="cpu")


@pytest.fixture(scope="module")
def micro(micro_checkpoint: Path) -> DFPIRRestorer:
    return DFPIRRestorer(micro_checkpoint, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 x 128 centres of two shipped examples (hazy, rainy), small enough to restore in a blink; the centre
    keeps what makes them hazy and rainy (a corner of the rocket's sky alone is not surely hazy)."""
    folder = tmp_path_factory.mktemp("photos")
    for family, name in (("hazy", "rocket.png"), ("rainy", "motorcycle.png")):
        image = cv2.imread(str(EXAMPLES / family / name), cv2.IMREAD_UNCHANGED)
        top, left = image.shape[0] // 2 - 48, image.shape[1] // 2 - 64
        cv2.imwrite(str(folder / name), image[top:top + 96, left:left + 128])
    return folder


def cli_restore(inputs: Path, output: Path, *options: str) -> None:
    result = runner.invoke(app, ["restore", str(inputs), "-o", str(output), "--device", "cpu", "--quiet", *options])
    assert result.exit_code == 0, result.output


def rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]


@pytest.mark.parametrize("degradation", ["haze", "rain+noise25", "auto"])
def test_the_api_restores_as_the_cli_does(default, photos, tmp_path, degradation):
    """An array, a path and restore_file give the pixels `dfpir restore` writes (auto: the same detector)."""
    cli_restore(photos, tmp_path / "cli", "--degradation", degradation)
    for name in ("rocket.png", "motorcycle.png"):
        written = rgb(tmp_path / "cli" / name)
        assert np.array_equal(default.restore(rgb(photos / name), degradation), written)
        assert np.array_equal(np.asarray(default.restore(photos / name, degradation)), written)
        target = default.restore_file(photos / name, tmp_path / "api" / name, degradation)
        assert target.read_bytes() == (tmp_path / "cli" / name).read_bytes()


def test_auto_mode_detects_and_restores(default, photos):
    hazy = rgb(photos / "rocket.png")
    detection = default.detect(hazy)
    assert isinstance(detection, Detection) and detection.label == "haze"
    assert np.array_equal(default.restore(hazy), default.restore(hazy, "haze"))
    plan = default.plan(hazy)
    assert plan.names == ("haze",) and "haze" in str(plan)


def test_a_photo_found_clean_comes_back_unchanged(default, monkeypatch, photos, tmp_path):
    clean = Detection({"clean": 0.99}, None, (), 0.99)
    monkeypatch.setattr(default.detector, "detect", lambda *args, **kwargs: clean)
    image = rgb(photos / "rocket.png")
    restored = default.restore(image)
    assert restored is not image and np.array_equal(restored, image)
    pil = Image.fromarray(image)
    assert np.array_equal(np.asarray(default.restore(pil)), image)
    target = default.restore_file(photos / "rocket.png", tmp_path / "rocket.png")
    assert target.read_bytes() == (photos / "rocket.png").read_bytes()  # copied, as the CLI copies clean photos


def test_arrays_come_back_in_their_dtype_shape_and_alpha(micro):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (40, 56, 1), dtype=np.uint8)
    cases = {
        "uint8 RGB": colour,
        "uint8 RGBA": np.concatenate([colour, alpha], axis=2),
        "uint16 RGB": colour.astype(np.uint16) * 257,
        "uint16 RGBA": np.concatenate([colour, alpha], axis=2).astype(np.uint16) * 257,
        "float32 RGB": colour.astype(np.float32) / 255,
        "float64 RGBA": np.concatenate([colour, alpha], axis=2) / 255.0,
        "grey": colour[:, :, 0],
        "grey x 1": colour[:, :, :1],
        "grey + alpha": np.concatenate([colour[:, :, :1], alpha], axis=2),
    }
    for label, image in cases.items():
        restored = micro.restore(image, "noise25")
        assert restored.shape == image.shape and restored.dtype == image.dtype, label
        assert not np.array_equal(restored, image), label  # it was restored
        if image.ndim == 3 and image.shape[2] in (2, 4):
            assert np.array_equal(restored[:, :, -1], image[:, :, -1]), label  # alpha untouched
    eight, sixteen = micro.restore(cases["uint8 RGB"], "rain"), micro.restore(cases["uint16 RGB"], "rain")
    assert np.abs(sixteen / 257.0 - eight).max() <= 0.51  # 16-bit keeps the precision 8-bit rounds away
    floats = micro.restore(cases["float32 RGB"], "rain")
    assert floats.min() >= 0 and floats.max() <= 1 and not np.array_equal(np.round(floats * 255) / 255, floats)


def test_sixteen_bit_arrays_match_sixteen_bit_files(micro, micro_checkpoint, tmp_path):
    image = (np.random.default_rng(1).random((32, 48, 3)) * 65535).astype(np.uint16)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "deep.png"), image[:, :, ::-1])
    cli_restore(tmp_path / "in", tmp_path / "out", "-d", "haze", "-w", str(micro_checkpoint), "--precision", "fp32")
    written = rgb(tmp_path / "out" / "deep.png")
    assert written.dtype == np.uint16
    assert np.array_equal(micro.restore(image, "haze"), written)


@pytest.mark.parametrize(("mode", "back"), [("RGB", "RGB"), ("RGBA", "RGBA"), ("L", "L"), ("LA", "LA"),
                                            ("I;16", "I;16"), ("I", "I"), ("F", "F"), ("P", "RGB"),
                                            ("CMYK", "RGB")])
def test_pil_images_come_back_in_their_mode(micro, mode, back):
    base = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(np.asarray(base.convert("L")).astype(np.float32) / 255)
    else:
        image = base.convert(mode)
    image.info["icc_profile"] = b"profile bytes"
    restored = micro.restore(image, "noise25")
    assert isinstance(restored, Image.Image) and restored.mode == back and restored.size == image.size
    assert restored.info["icc_profile"] == b"profile bytes"
    if "A" in mode:
        assert np.array_equal(np.asarray(restored)[:, :, -1], np.asarray(image)[:, :, -1])


def test_paths_come_back_as_pil_images_with_grey_and_alpha_kept(micro, tmp_path):
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(rng.integers(0, 256, (30, 40, 4), dtype=np.uint8)).save(tmp_path / "rgba.png")
    assert micro.restore(tmp_path / "grey.png", "noise25").mode == "L"
    restored = micro.restore(str(tmp_path / "rgba.png"), "noise25")
    assert restored.mode == "RGBA"
    assert np.array_equal(np.asarray(restored)[:, :, 3], np.asarray(Image.open(tmp_path / "rgba.png"))[:, :, 3])


def test_many_images_with_one_model_load(micro_checkpoint, monkeypatch):
    loads = []
    resolve = api.resolve_weights
    monkeypatch.setattr(api, "resolve_weights", lambda *args, **kwargs: loads.append(args) or resolve(*args, **kwargs))
    restorer = DFPIRRestorer(micro_checkpoint, device="cpu", precision="fp32")
    images = [np.full((24 + 8 * i, 32, 3), 40 * i, np.uint8) for i in range(4)]
    restored = restorer.restore_many(images, "rain")
    assert len(loads) == 1
    assert [image.shape for image in restored] == [image.shape for image in images]
    assert all(np.array_equal(one, restorer.restore(image, "rain")) for one, image in zip(restored, images, strict=True))


def test_one_call_restore(micro, micro_checkpoint):
    image = np.random.default_rng(4).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    once = restore_image(image, "hazy", weights=micro_checkpoint, device="cpu")
    assert once.shape == image.shape
    assert np.abs(once.astype(int) - micro.restore(image, "haze").astype(int)).max() <= 1  # auto precision may differ
    assert dfpir_cli.restore_image is api.restore_image


def test_weights_by_the_names_the_cli_takes(micro_checkpoint):
    assert DFPIRRestorer(micro_checkpoint / "model.safetensors", device="cpu").degradations[:2] == ("noise15", "noise25")
    with pytest.raises(DfpirError, match="dfpir fetch-weights official:five-task"):
        DFPIRRestorer("official:five-task", device="cpu")
    with pytest.raises(DfpirError, match="no such file or folder"):
        DFPIRRestorer("./no/such/folder", device="cpu")


def test_bad_input_says_what_to_pass(micro, tmp_path):
    image = np.zeros((16, 16, 3), np.uint8)
    problems = {
        "shape": (np.zeros((3, 16, 16), np.uint8), "channels last"),
        "dtype": (np.zeros((16, 16, 3), np.int32), "uint8, uint16, or float"),
        "scale": (np.full((16, 16, 3), 200.0, np.float32), "0..1 scale"),
        "nan": (np.full((16, 16, 3), np.nan, np.float32), "NaN"),
        "kind": ([[1, 2], [3, 4]], "a numpy array .*, a PIL image, or the path"),
        "missing file": (tmp_path / "absent.png", "does not exist"),
    }
    for label, (bad, message) in problems.items():
        with pytest.raises(InputError, match=message):
            micro.restore(bad, "rain")
        assert label
    with pytest.raises(UnknownDegradationError):
        micro.restore(image, "snow")
    with pytest.raises(DfpirError, match="same degradation twice"):
        micro.restore(image, "rain+rainy")
    Image.fromarray(image).save(tmp_path / "photo.png")
    with pytest.raises(DfpirError, match="never overwrites its inputs"):
        micro.restore_file(tmp_path / "photo.png", tmp_path / "photo.png", "rain")
    with pytest.raises(DfpirError, match="suffixes dfpir writes"):
        micro.restore_file(tmp_path / "photo.png", tmp_path / "photo.gif", "rain")
    micro.restore_file(tmp_path / "photo.png", tmp_path / "out.jpg", "rain")
    with pytest.raises(DfpirError, match="overwrite=True"):
        micro.restore_file(tmp_path / "photo.png", tmp_path / "out.jpg", "rain", overwrite=False)


def test_the_docstring_examples_run():
    import doctest

    assert doctest.testmod(api, raise_on_error=False).failed == 0
