"""End-to-end `dfpir restore` on generated images in a temporary folder, with a tiny checkpoint saved for the test."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import MICRO, make_prompts
from PIL import Image, ImageCms
from typer.testing import CliRunner

from dfpir_cli.base.precision import cpu_has_native_bf16
from dfpir_cli.cli import app
from dfpir_cli.errors import CheckpointError
from dfpir_cli.model import DFPIR
from dfpir_cli.weights.checkpoint import PromptBank, save_checkpoint
from dfpir_cli.weights.resolve import resolve_weights

runner = CliRunner()
RNG = np.random.default_rng(0)


def run(*args: str):
    return runner.invoke(app, ["restore", *map(str, args)])


def run_json(*args: str) -> tuple[int, dict]:
    result = run(*args, "--json")
    return result.exit_code, json.loads(result.stdout)


def by_name(summary: dict) -> dict[str, dict]:
    return {Path(entry["source"]).name: entry for entry in summary["files"]}


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def rgb(h: int = 24, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def bomb_png(path: Path) -> None:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """A folder with every kind of input, good and bad, and a sub-folder."""
    folder = tmp_path / "photos"
    (folder / "trip" / "day1").mkdir(parents=True)
    Image.fromarray(rgb()).save(folder / "plain.png")
    Image.fromarray(rgb()).save(folder / "photo.jpg", quality=95)
    cv2.imwrite(str(folder / "deep.tif"), RNG.integers(0, 65536, (24, 32, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "deep.png"), RNG.integers(0, 65536, (20, 28, 3), dtype=np.uint16))
    Image.fromarray(rgb()).save(folder / "old.bmp")
    Image.fromarray(rgb()).save(folder / "web.webp", lossless=True)
    Image.fromarray(RNG.integers(0, 256, (24, 32), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(RNG.integers(0, 256, (24, 32, 4), dtype=np.uint8), mode="RGBA").save(folder / "cutout.png")
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "dfpir-test-camera"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rgb(16, 40)).save(folder / "portrait.jpg", exif=exif, icc_profile=icc, quality=95)
    Image.fromarray(rgb()).save(folder / "trip" / "day1" / "beach.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not an image\n")
    (folder / "README.txt").write_text("a sidecar file, not an image: ignored inside folders\n")
    truncated = folder / "broken.png"
    Image.fromarray(rgb(64, 64)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:150])
    bomb_png(folder / "bomb.png")
    return folder


def test_folder_of_every_kind_of_input(photos, micro_checkpoint, tmp_path):
    before = digest(photos)
    out = tmp_path / "out"
    code, summary = run_json(photos, "-r", "-d", "hazy", "-w", micro_checkpoint, "-o", out, "--device", "cpu")
    assert code == 1  # some files failed, the rest were restored
    files = by_name(summary)
    good = ["plain.png", "photo.jpg", "deep.tif", "deep.png", "old.bmp", "web.webp", "grey.png", "cutout.png",
            "portrait.jpg", "beach.png"]
    assert all(files[name]["status"] == "processed" for name in good), summary
    assert summary["processed"] == len(good) and summary["failed"] == 4 and summary["skipped"] == 0
    reasons = {name: files[name]["reason"] for name in ("empty.jpg", "notes.png", "broken.png", "bomb.png")}
    assert "empty" in reasons["empty.jpg"]
    assert "not an image" in reasons["notes.png"]
    assert "corrupt" in reasons["broken.png"]
    assert "megapixels" in reasons["bomb.png"]
    assert "README.txt" not in files
    assert summary["device"] == "cpu" and summary["megapixels_per_second"] > 0 and summary["prompt"] == "haze"
    assert digest(photos) == before  # no input touched

    # Formats, depths, grey and alpha come back as they went in; sub-folders are kept.
    assert (out / "trip" / "day1" / "beach.png").is_file()
    assert cv2.imread(str(out / "deep.tif"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert Image.open(out / "grey.png").mode == "L"
    with Image.open(out / "cutout.png") as cutout, Image.open(photos / "cutout.png") as original:
        assert cutout.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(cutout)[:, :, 3], np.asarray(original)[:, :, 3])
    with Image.open(out / "portrait.jpg") as portrait:  # EXIF orientation applied, EXIF and ICC kept
        assert portrait.size == (16, 40)
        assert portrait.getexif().get(0x0112) == 1 and portrait.getexif().get(0x010F) == "dfpir-test-camera"
        assert portrait.info.get("icc_profile")
    for name in ("old.bmp", "web.webp", "photo.jpg", "plain.png"):
        assert Image.open(out / name).format == Image.open(photos / name).format
    assert not list(out.rglob(".*"))  # no temporary files left


def test_outputs_really_are_the_network_output(tmp_path, micro_checkpoint):
    pixels = rgb(32, 40)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert run(tmp_path / "a.png", "-d", "rain", "-w", micro_checkpoint, "-o", tmp_path / "out", "-q").exit_code == 0
    checkpoint = resolve_weights(str(micro_checkpoint))
    with torch.no_grad():
        expected = checkpoint.model(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255,
                                    checkpoint.prompts.code("rain")[None]).clamp(0, 1)
    expected = (expected[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), expected)


def test_rerun_skips_existing_and_overwrite_replaces(tmp_path, micro_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(rgb()).save(folder / name)
    out = tmp_path / "out"
    args = (folder, "-d", "noisy", "-w", micro_checkpoint, "-o", out)
    code, first = run_json(*args)
    assert code == 0 and first["processed"] == 2
    stamp = (out / "a.png").stat().st_mtime_ns
    code, second = run_json(*args)
    assert code == 0 and second["skipped"] == 2 and second["processed"] == 0
    assert "--overwrite" in second["files"][0]["reason"]
    assert (out / "a.png").stat().st_mtime_ns == stamp
    code, third = run_json(*args, "--overwrite")
    assert code == 0 and third["processed"] == 2


def test_output_equal_to_input_folder_without_suffix_is_refused(tmp_path, micro_checkpoint):
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    before = digest(tmp_path)
    result = run(tmp_path, "-d", "hazy", "-w", micro_checkpoint, "-o", tmp_path)
    assert result.exit_code == 2
    assert "never overwrites its inputs" in result.output and "--suffix" in result.output
    assert digest(tmp_path) == before
    code, summary = run_json(tmp_path, "-d", "hazy", "-w", micro_checkpoint, "-o", tmp_path, "--suffix", "_restored")
    assert code == 0 and (tmp_path / "a_restored.png").is_file()
    assert hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest() == before["a.png"]


def test_unknown_degradation_is_a_usage_error(tmp_path, micro_checkpoint):
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    result = run(tmp_path / "a.png", "-d", "sunburn", "-w", micro_checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "sunburn" in result.output and "hazy" in result.output  # lists what it knows, with aliases
    assert not (tmp_path / "out").exists()
    code, summary = run_json(tmp_path / "a.png", "-w", micro_checkpoint, "-o", tmp_path / "out")  # no -d: auto
    assert code == 0 and sum(summary["detected"].values()) == 1 and summary["prompt"] == "auto (detected per photo)"


def test_missing_paths_and_empty_folders(tmp_path, micro_checkpoint):
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(rgb()).save(tmp_path / "nested" / "deeper" / "b.png")
    out = tmp_path / "out"
    code, summary = run_json(tmp_path / "a.png", tmp_path / "nope.png", tmp_path / "empty", "-d", "hazy",
                             "-w", micro_checkpoint, "-o", out)
    assert code == 1 and summary["processed"] == 1 and summary["failed"] == 2
    reasons = " | ".join(entry["reason"] for entry in summary["files"])
    assert "does not exist" in reasons and "no images" in reasons
    for only in (tmp_path / "nope.png", tmp_path / "empty"):
        result = run(only, "-d", "hazy", "-w", micro_checkpoint, "-o", out)
        assert result.exit_code == 2 and "nothing to restore" in result.output
    result = run(tmp_path / "nested", "-d", "hazy", "-w", micro_checkpoint, "-o", out)
    assert result.exit_code == 2 and "--recursive" in result.output


def test_globs_keep_the_structure_below_the_pattern(tmp_path, micro_checkpoint, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for sub in ("shots/a", "shots/b"):
        Path(sub).mkdir(parents=True)
        Image.fromarray(rgb()).save(Path(sub) / "x.png")
    Image.fromarray(rgb()).save("shots/a/y.jpg")
    code, summary = run_json("shots/**/*.png", "-d", "hazy", "-w", micro_checkpoint, "-o", "out")
    assert code == 0 and summary["processed"] == 2
    assert Path("out/a/x.png").is_file() and Path("out/b/x.png").is_file() and not Path("out/a/y.jpg").exists()
    code, first = run_json("**/x.png", "-d", "hazy", "-w", micro_checkpoint, "-o", "out")
    assert code == 0 and first["processed"] == 2 and Path("out/shots/a/x.png").is_file()
    code, again = run_json("**/x.png", "-d", "hazy", "-w", micro_checkpoint, "-o", "out")
    assert code == 0 and again["skipped"] == 2 and again["processed"] == 0  # its own outputs are not inputs
    result = run("shots/*.webp", "-d", "hazy", "-w", micro_checkpoint, "-o", "out")
    assert result.exit_code == 2 and "no images match" in result.output


def test_same_name_from_two_folders_does_not_overwrite(tmp_path, micro_checkpoint):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(rgb()).save(tmp_path / sub / "x.png")
    code, summary = run_json(tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "-d", "hazy",
                             "-w", micro_checkpoint, "-o", tmp_path / "out")
    assert code == 1 and summary["processed"] == 1
    assert "already written" in [e for e in summary["files"] if e["status"] == "failed"][0]["reason"]


def test_ext_converts_and_refuses_alpha_in_jpeg(tmp_path, micro_checkpoint):
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    Image.fromarray(RNG.integers(0, 256, (24, 32, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "b.png")
    code, summary = run_json(tmp_path / "a.png", tmp_path / "b.png", "-d", "hazy", "-w", micro_checkpoint,
                             "-o", tmp_path / "out", "--ext", "jpg")
    assert code == 1
    assert Image.open(tmp_path / "out" / "a.jpg").format == "JPEG"
    assert "alpha" in by_name(summary)["b.png"]["reason"]
    assert not (tmp_path / "out" / "b.jpg").exists()
    result = run(tmp_path / "a.png", "-d", "hazy", "-w", micro_checkpoint, "-o", tmp_path / "out", "--ext", "gif")
    assert result.exit_code == 2 and "--ext gif" in result.output


def test_tiling_options(tmp_path, micro_checkpoint):
    Image.fromarray(rgb(40, 56)).save(tmp_path / "a.png")
    base = (tmp_path / "a.png", "-d", "hazy", "-w", micro_checkpoint)
    code, tiled = run_json(*base, "-o", tmp_path / "tiled", "--tile", "24", "--tile-overlap", "8", "--batch-size", "3")
    assert code == 0 and tiled["tile"] == tiled["tile_haze_lowlight"] == 24
    code, whole = run_json(*base, "-o", tmp_path / "whole", "--tile", "0")
    assert code == 0 and whole["tile"] is None and whole["tile_haze_lowlight"] is None
    code, auto = run_json(*base, "-o", tmp_path / "auto", "--device", "cpu")
    assert code == 0 and auto["tile"] == 512 and auto["tile_haze_lowlight"] > 512  # haze: the widest tile memory allows
    a = np.asarray(Image.open(tmp_path / "tiled" / "a.png")).astype(float)
    b = np.asarray(Image.open(tmp_path / "whole" / "a.png")).astype(float)
    assert a.shape == b.shape == (40, 56, 3) and np.abs(a - b).mean() < 40  # same image, tile edges aside
    for bad in (("--tile", "16", "--tile-overlap", "16"), ("--batch-size", "0"), ("--tile-overlap", "-1")):
        result = run(*base, "-o", tmp_path / "bad", *bad)
        assert result.exit_code == 2, bad


def test_device_and_precision(tmp_path, micro_checkpoint):
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    base = (tmp_path / "a.png", "-d", "hazy", "-w", micro_checkpoint, "-o", tmp_path / "out", "--overwrite")
    code, summary = run_json(*base, "--device", "cpu")  # auto: the random micro network fails the bf16 check
    assert code == 0 and summary["precision"] == "fp32"
    assert not cpu_has_native_bf16() or "auto chose fp32" in summary["notes"][0]
    code, summary = run_json(*base, "--device", "cpu", "--precision", "fp16")
    assert code == 0 and summary["precision"] == "fp32" and "needs a GPU" in summary["notes"][0]
    code, summary = run_json(*base, "--device", "cpu", "--precision", "bf16")
    assert code == 0 and summary["precision"] == "bf16"
    result = run(*base, "--precision", "fp8")
    assert result.exit_code == 2 and "auto, fp32, bf16, fp16" in result.output
    result = run(*base, "--device", "tpu")
    assert result.exit_code == 2
    if not torch.cuda.is_available():
        result = run(*base, "--device", "cuda")
        assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_quiet_and_human_summary(tmp_path, micro_checkpoint):
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    result = run(tmp_path, "-d", "hazy", "-w", micro_checkpoint, "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 1
    # Quiet: the failure, then one line of counts; no table, no progress.
    lines = result.output.strip().splitlines()
    assert lines[-1] == f"1 restored, 0 skipped, 1 failed; outputs in {tmp_path / 'out'}", result.output
    assert "b.png" in result.output and "MP/s" not in result.output and len(lines) <= 3
    # notes (here: fp16 needs a GPU) are said in quiet mode too
    result = run(tmp_path / "a.png", "-d", "hazy", "-w", micro_checkpoint, "-o", tmp_path / "out3", "--quiet",
                 "--device", "cpu", "--precision", "fp16")
    assert result.exit_code == 0 and "note:" in result.output and "needs a GPU" in result.output, result.output
    result = run(tmp_path, "-d", "hazy", "-w", micro_checkpoint, "-o", tmp_path / "out2")
    for word in ("processed", "skipped", "failed", "MP/s", "cpu", "b.png"):
        assert word in result.output


def test_output_that_is_a_file_is_a_usage_error(tmp_path, micro_checkpoint):
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    (tmp_path / "taken").write_text("keep me")
    result = run(tmp_path / "a.png", "-d", "hazy", "-w", micro_checkpoint, "-o", tmp_path / "taken")
    assert result.exit_code == 2 and "is a file" in result.output and "Choose a folder" in result.output
    assert (tmp_path / "taken").read_text() == "keep me"


def test_free_text_prompt_needs_a_clip_checkpoint_and_clip_weights(tmp_path, micro_checkpoint, monkeypatch):
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    result = run(tmp_path / "a.png", "--prompt", "foggy morning", "-w", micro_checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "not made by CLIP" in result.output
    torch.manual_seed(0)
    prompts = make_prompts(MICRO.text_dim)
    clip_bank = PromptBank(prompts.names, prompts.texts, prompts.codes, "clip")
    clip_checkpoint = save_checkpoint(tmp_path / "clip_ckpt", DFPIR(MICRO).eval(), clip_bank)
    monkeypatch.setenv("DFPIR_CLIP_WEIGHTS", str(tmp_path / "no-such-clip.safetensors"))
    result = run(tmp_path / "a.png", "--prompt", "foggy morning", "-w", clip_checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "CLIP" in result.output and "fetch-weights" in result.output
    result = run(tmp_path / "a.png", "--prompt", "fog", "-d", "hazy", "-w", clip_checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "exactly one" in result.output


def test_weights_specs(tmp_path, micro_checkpoint, monkeypatch):
    assert resolve_weights(str(micro_checkpoint / "model.safetensors")).config == MICRO
    reference = tmp_path / "model.pth"
    torch.save({"state_dict": DFPIR(MICRO).state_dict()}, reference)
    with pytest.raises(CheckpointError, match="--import-official"):
        resolve_weights(str(reference))
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_weights(str(tmp_path / "missing"))
    import dfpir_cli.weights.resolve as weights

    monkeypatch.setattr(weights, "DEFAULT_CHECKPOINT", tmp_path / "no-default")
    with pytest.raises(CheckpointError, match="--weights"):
        resolve_weights(None)
    monkeypatch.setattr(weights, "DEFAULT_CHECKPOINT", micro_checkpoint)
    assert resolve_weights(None).config == MICRO
    calls = []

    def fake_hub(repo_id, revision=None, device="cpu"):
        calls.append((repo_id, revision))
        return resolve_weights(str(micro_checkpoint))

    import dfpir_cli.weights.hub as hub

    monkeypatch.setattr(hub, "load_from_hub", fake_hub)
    assert resolve_weights("someone/dfpir-5d@v1").config == MICRO and calls == [("someone/dfpir-5d@v1", None)]
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    result = run(tmp_path / "a.png", "-d", "hazy", "-w", reference, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--import-official" in result.output


def test_progress_bars_in_a_terminal(tmp_path, micro_checkpoint):
    import os
    import subprocess
    import sys

    Image.fromarray(rgb(16, 24)).save(tmp_path / "wide.png")  # two 16-px tiles
    (tmp_path / "zero.png").write_bytes(b"")
    env = {**os.environ, "TTY_COMPATIBLE": "1", "FORCE_TERMINAL": "1", "COLUMNS": "120"}
    command = [sys.executable, "-c", "from dfpir_cli.cli import app; app()", "restore", str(tmp_path), "-d", "hazy", "-w",
               str(micro_checkpoint), "-o", str(tmp_path / "out"), "--tile", "16", "--tile-overlap", "4"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "tiles" in result.stderr and "wide.png" in result.stderr  # file and tile bars
    assert "failed" in result.stderr and "zero.png" in result.stderr  # failures reported as they happen
    assert "processed" in result.stdout  # then the summary
    ensembled = subprocess.run([*command, "--self-ensemble", "4", "--overwrite"], env=env, capture_output=True,
                               text=True, timeout=300)
    assert "tiles x 4 views" in ensembled.stderr, ensembled.stderr  # the bar counts each tile in each view
