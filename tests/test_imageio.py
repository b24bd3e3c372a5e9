"""Image reading and writing: formats, bit depths, grey, alpha, EXIF orientation, EXIF/ICC kept, bad files, atomicity."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from dfpir_cli.base.imageio import encode_image, read_image, write_atomic, write_image
from dfpir_cli.errors import InputError
from dfpir_cli.weights.checkpoint import write_folder_atomic

RNG = np.random.default_rng(0)


def rgb8(h: int = 24, w: int = 40) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth8(h: int = 24, w: int = 40) -> np.ndarray:
    """A gentle gradient: what lossy codecs (JPEG, WebP) keep within a few levels."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y * 200 // h, x * 200 // w, (x + y) * 100 // (h + w) + 50], axis=2).astype(np.uint8)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_with(orientation: int, make: str = "dfpir-test-camera") -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = make
    return exif


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".webp", ".jpg"])
def test_8bit_rgb_round_trip(tmp_path, suffix):
    pixels = rgb8() if suffix in (".png", ".tif", ".bmp") else smooth8()
    source = tmp_path / f"in{suffix}"
    options = {"lossless": True} if suffix == ".webp" else {"quality": 100, "subsampling": 0} if suffix == ".jpg" else {}
    Image.fromarray(pixels).save(source, **options)
    image = read_image(source)
    assert image.pixels.shape == (3, 24, 40) and image.pixels.dtype == torch.float32
    assert image.bit_depth == 8 and not image.grey and image.alpha is None
    target = tmp_path / f"out{suffix}"
    write_image(target, image.pixels, image)
    back = np.asarray(Image.open(target).convert("RGB"))
    tolerance = 0 if suffix in (".png", ".tif", ".bmp") else 6
    assert np.abs(back.astype(int) - np.asarray(Image.open(source).convert("RGB")).astype(int)).max() <= tolerance


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_rgb_stays_16bit_and_exact(tmp_path, suffix):
    pixels = RNG.integers(0, 65536, (20, 28, 3), dtype=np.uint16)
    source = tmp_path / f"in{suffix}"
    cv2.imwrite(str(source), pixels[:, :, ::-1])
    image = read_image(source)
    assert image.bit_depth == 16
    torch.testing.assert_close(image.pixels, torch.from_numpy(pixels.astype(np.float32) / 65535).permute(2, 0, 1))
    target = tmp_path / f"out{suffix}"
    write_image(target, image.pixels, image)
    back = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[:, :, ::-1], pixels)


@pytest.mark.parametrize("mode,depth", [("L", 8), ("I;16", 16)])
def test_grey_is_restored_as_grey(tmp_path, mode, depth):
    values = RNG.integers(0, 256 if depth == 8 else 65536, (16, 24)).astype(np.uint8 if depth == 8 else np.uint16)
    source = tmp_path / "grey.png"
    Image.fromarray(values).save(source)
    assert Image.open(source).mode == mode
    image = read_image(source)
    assert image.grey and image.bit_depth == depth
    assert torch.equal(image.pixels[0], image.pixels[1]) and torch.equal(image.pixels[1], image.pixels[2])
    target = tmp_path / "out.png"
    write_image(target, image.pixels, image)
    back = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert back.ndim == 2 and back.dtype == values.dtype
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize("depth", [8, 16])
def test_alpha_passes_through_untouched(tmp_path, depth):
    dtype = np.uint8 if depth == 8 else np.uint16
    top = 255 if depth == 8 else 65535
    bgra = RNG.integers(0, top + 1, (18, 30, 4)).astype(dtype)
    source = tmp_path / "rgba.png"
    cv2.imwrite(str(source), bgra)
    image = read_image(source)
    assert image.alpha is not None and image.alpha.dtype == dtype
    target = tmp_path / "out.png"
    write_image(target, 1 - image.pixels, image)  # colours change, alpha must not
    back = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert back.shape == bgra.shape and back.dtype == dtype
    np.testing.assert_array_equal(back[:, :, 3], bgra[:, :, 3])


def test_alpha_refused_by_jpeg_with_a_hint(tmp_path):
    source = tmp_path / "rgba.png"
    Image.fromarray(RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8), mode="RGBA").save(source)
    image = read_image(source)
    with pytest.raises(InputError, match="alpha.*--ext png"):
        encode_image(image.pixels, image, "JPEG")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    pixels = rgb8(12, 20)
    source = tmp_path / "oriented.png"
    Image.fromarray(pixels).save(source, exif=exif_with(orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(source)).convert("RGB"))
    image = read_image(source)
    got = (image.pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_tag_is_applied_once(tmp_path, orientation):
    pixels = rgb8(12, 20)
    png, tif = tmp_path / "o.png", tmp_path / "o.tif"
    Image.fromarray(pixels).save(png, exif=exif_with(orientation))
    Image.fromarray(pixels).save(tif, exif=exif_with(orientation))
    torch.testing.assert_close(read_image(tif).pixels, read_image(png).pixels)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_exif_and_icc_are_kept_with_orientation_reset(tmp_path, suffix):
    icc = srgb_icc()
    source = tmp_path / f"meta{suffix}"
    Image.fromarray(rgb8(16, 32)).save(source, exif=exif_with(6), icc_profile=icc)
    image = read_image(source)
    assert image.pixels.shape[-2:] == (32, 16)  # rotated upright
    target = tmp_path / f"out{suffix}"
    write_image(target, image.pixels, image)
    with Image.open(target) as written:
        assert written.size == (16, 32)
        assert written.info.get("icc_profile") == icc
        exif = written.getexif()
        assert exif.get(0x010F) == "dfpir-test-camera" and exif.get(0x0112) == 1


def test_16bit_png_keeps_exif_and_icc(tmp_path):
    icc = srgb_icc()
    pixels = RNG.integers(0, 65536, (10, 14, 3), dtype=np.uint16)
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    plain = tmp_path / "plain16.png"
    plain.write_bytes(encoded.tobytes())
    image = read_image(plain)
    image.exif, image.icc_profile = exif_with(1).tobytes(), icc
    target = tmp_path / "out16.png"
    write_image(target, image.pixels, image)
    assert cv2.imread(str(target), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with Image.open(target) as written:
        assert written.info.get("icc_profile") == icc
        assert written.getexif().get(0x010F) == "dfpir-test-camera"


def bomb_png(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A valid-looking PNG header that claims 2.5 gigapixels, with almost no data behind it."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist"), ("empty", "empty"), ("text", "not an image"), ("truncated", "corrupt"),
    ("bomb", "megapixels"), ("gif", "GIF"), ("folder", "folder")])
def test_bad_files_are_clear_errors(tmp_path, case, message):
    path = tmp_path / f"{case}.png"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not a picture\n")
    elif case == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(rgb8(64, 64)).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue()[:200])
    elif case == "bomb":
        bomb_png(path)
    elif case == "gif":
        Image.fromarray(rgb8()).save(path, format="GIF")
    elif case == "folder":
        path.mkdir()
    with pytest.raises(InputError, match=message):
        read_image(path)


def test_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new content")
    assert target.read_bytes() == b"previous"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary left behind
    monkeypatch.undo()
    write_atomic(tmp_path / "sub" / "new.png", b"data")
    assert (tmp_path / "sub" / "new.png").read_bytes() == b"data"


@pytest.mark.parametrize("channels", [3, 1])
def test_float_tiff_is_read_on_its_0_1_scale_and_written_back_as_float(tmp_path: Path, channels: int) -> None:
    import tifffile

    rng = np.random.default_rng(3)
    pixels = rng.random((20, 28, channels) if channels == 3 else (20, 28)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", pixels, photometric="rgb" if channels == 3 else "minisblack")
    image = read_image(tmp_path / "f.tif")
    assert image.bit_depth == 32 and image.format == "TIFF" and image.grey == (channels == 1)
    expected = torch.from_numpy(pixels).permute(2, 0, 1) if channels == 3 else torch.from_numpy(pixels).expand(3, -1, -1)
    torch.testing.assert_close(image.pixels, expected)
    write_image(tmp_path / "out.tif", image.pixels, image)
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == np.float32 and back.shape == pixels.shape
    np.testing.assert_allclose(back, pixels, atol=1e-6 if channels == 3 else 1e-5)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_atomic_outputs_get_the_mode_a_direct_write_would(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "out.png", b"data")
        folder = write_folder_atomic(tmp_path / "checkpoint", {"config.json": b"{}"})
        (tmp_path / "direct").write_bytes(b"data")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == (tmp_path / "direct").stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755  # not mkstemp's 0o600 and mkdtemp's 0o700
    assert (folder / "config.json").stat().st_mode & 0o777 == 0o644
