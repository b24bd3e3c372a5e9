"""`dfpir export --format onnx`: every prompt of the default model, and the paper preset, run by ONNX Runtime as
PyTorch runs them (>= 45 dB), at two sizes (dynamic height and width), with clear errors and atomic writes."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import torch
from cli_process import DFPIR as DFPIR_COMMAND
from cli_process import run
from conftest import make_checkpoint
from PIL import Image
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.commands.export import _verification_images
from dfpir_cli.errors import ExportDependencyError, UnknownDegradationError
from dfpir_cli.model import PRESETS
from dfpir_cli.weights.checkpoint import load_checkpoint
from dfpir_cli.weights.export import ONNX_OPSET, export_onnx, psnr_against_pytorch, run_onnx
from dfpir_cli.weights.resolve import resolve_weights

runner = CliRunner()
MIN_PSNR = 45.0


@pytest.fixture(scope="module")
def default_model():
    return resolve_weights(None)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Two shipped photos, 256x256 and 229x197 (not multiples of 8): the sizes `dfpir export --verify` uses."""
    return _verification_images()


def test_every_prompt_of_the_default_model_runs_in_onnxruntime_as_in_pytorch(default_model, photos, tmp_path):
    assert [image.shape[-2:] for image in photos] == [(256, 256), (229, 197)]
    for name in default_model.prompts.names:
        result = export_onnx(default_model, name, tmp_path / f"{name}.onnx")
        assert result.degradation == name and result.opset == ONNX_OPSET
        for image in photos:
            assert psnr_against_pytorch(result.path, default_model, name, image) >= MIN_PSNR, (name, image.shape)
    # One file per prompt: the prompts' outputs differ, so each file carries its own code.
    hazy, dark = (run_onnx(tmp_path / f"{name}.onnx", photos[1]) for name in ("haze", "lowlight"))
    assert np.abs(hazy - dark).mean() > 1e-3


def test_the_file_states_its_prompt_opset_and_dynamic_sizes(default_model, tmp_path):
    path = export_onnx(default_model, "hazy", tmp_path / "haze.onnx").path
    graph = onnx.load(str(path))
    metadata = {entry.key: entry.value for entry in graph.metadata_props}
    assert metadata["dfpir.degradation"] == "haze"
    assert metadata["dfpir.prompt_text"] == "Hazy degradation with normal haze"
    assert metadata["dfpir.opset"] == str(ONNX_OPSET)
    assert json.loads(metadata["dfpir.config"]) == default_model.config.to_dict()
    assert {entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")} == {ONNX_OPSET}
    assert [input.name for input in graph.graph.input] == ["image"]  # the code is baked in, not an input
    dims = [dim.dim_param for dim in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3] and dims[1] == ""
    # A batch of two small images of a size the network cannot take as it is (padded and cropped inside).
    images = np.random.default_rng(0).random((2, 3, 13, 21), dtype=np.float32)
    out = run_onnx(path, images)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert psnr_against_pytorch(path, default_model, "haze", images) >= MIN_PSNR


def test_the_paper_preset_exports_and_matches_pytorch(tmp_path):
    folder = make_checkpoint(tmp_path / "paper", PRESETS["paper"])
    checkpoint = load_checkpoint(folder)
    path = export_onnx(checkpoint, "noise25", tmp_path / "paper.onnx").path
    rng = np.random.default_rng(1)
    for height, width in ((64, 64), (41, 56)):
        image = rng.random((1, 3, height, width), dtype=np.float32)
        assert psnr_against_pytorch(path, checkpoint, "noise25", image) >= MIN_PSNR


def test_export_command_in_a_process(tmp_path):
    target = tmp_path / "out" / "dehaze.onnx"
    result = run([*DFPIR_COMMAND, "export", "-d", "hazy", "-o", target, "--json"], tmp_path, timeout=300)
    summary = json.loads(result.stdout)
    assert summary["path"] == str(target) and summary["degradation"] == "haze" and summary["opset"] == ONNX_OPSET
    assert target.stat().st_size == summary["bytes"]
    assert [p.name for p in target.parent.iterdir()] == ["dehaze.onnx"]  # no temporary file left behind
    assert run_onnx(target, np.full((1, 3, 40, 48), 0.5, dtype=np.float32)).shape == (1, 3, 40, 48)


def test_export_verify_prints_the_psnr(micro_checkpoint, tmp_path):
    result = runner.invoke(app, ["export", str(micro_checkpoint), "-d", "rain", "-o", str(tmp_path / "rain.onnx"),
                                 "--verify"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "opset 17" in result.output and "'rain'" in result.output
    values = [float(part.split()[0]) for part in result.output.split("PyTorch fp32 on two shipped photos:")[1].split(",")]
    assert len(values) == 2 and min(values) >= MIN_PSNR


def test_export_help_is_complete():
    result = runner.invoke(app, ["export", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--degradation", "--output", "--format", "--opset", "--verify", "--json", "CHECKPOINT"):
        assert option in result.output
    assert "dfpir-cli[onnx]" in result.output and "[0, 1]" in result.output


@pytest.mark.parametrize(("arguments", "message"), [
    (["-d", "sunburn"], "does not know the degradation 'sunburn'"),
    (["-d", "haze", "--format", "tflite"], "--format tflite: dfpir exports onnx"),
    ([], "--degradation NAME is required"),
])
def test_export_refuses_bad_options(micro_checkpoint, tmp_path, arguments, message):
    result = runner.invoke(app, ["export", str(micro_checkpoint), *arguments, "-o", str(tmp_path / "x.onnx")],
                           terminal_width=200)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.onnx").exists()


def test_export_names_a_missing_checkpoint(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "nowhere"), "-d", "haze"], terminal_width=200)
    assert result.exit_code == 2 and "no such file or folder" in result.output, result.output


def test_an_unwritable_output_fails_clearly_and_keeps_the_old_file(micro_checkpoint, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["export", str(micro_checkpoint), "-d", "haze", "-o", str(blocker / "x.onnx")],
                           terminal_width=200)
    assert result.exit_code == 2 and f"cannot write {blocker / 'x.onnx'}" in result.output, result.output
    result = runner.invoke(app, ["export", str(micro_checkpoint), "-d", "haze", "-o", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 2 and "is a folder" in result.output
    # A failed export (here: an unknown prompt) leaves an existing file as it was, and no temporary file.
    existing = tmp_path / "keep.onnx"
    existing.write_bytes(b"old")
    with pytest.raises(UnknownDegradationError):
        export_onnx(load_checkpoint(micro_checkpoint), "sunburn", existing)
    assert existing.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "keep.onnx"]


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_missing_onnx_packages_say_what_to_install(micro_checkpoint, tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    with pytest.raises(ExportDependencyError, match=rf"{missing} is not installed: pip install 'dfpir-cli\[onnx\]'"):
        if missing == "onnx":
            export_onnx(load_checkpoint(micro_checkpoint), "haze", tmp_path / "x.onnx")
        else:
            run_onnx(tmp_path / "x.onnx", np.zeros((1, 3, 8, 8), dtype=np.float32))
    assert not (tmp_path / "x.onnx").exists()
    if missing == "onnx":
        result = runner.invoke(app, ["export", str(micro_checkpoint), "-d", "haze", "-o", str(tmp_path / "y.onnx")],
                               terminal_width=200)
        assert result.exit_code == 2 and "onnx is not installed" in result.output and "Traceback" not in result.output



def test_restore_backend_onnxruntime_restores_as_pytorch_fp32(micro_checkpoint, tmp_path):
    from dfpir_cli.restore.pipeline import Restorer

    checkpoint = load_checkpoint(micro_checkpoint)
    pixels = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(0))
    restored = {}
    for backend in ("pytorch", "onnxruntime"):
        restorer = Restorer(checkpoint, checkpoint.prompts.code("haze"), torch.device("cpu"), "fp32", tile=48,
                            overlap=8, name="haze", backend=backend)
        assert restorer.precision == "fp32" and restorer.precision_note == ""
        restored[backend] = restorer.restore(pixels)
    error = float(((restored["pytorch"] - restored["onnxruntime"]) ** 2).mean())
    assert error > 0 and 10 * np.log10(1 / error) >= MIN_PSNR
    note = Restorer(checkpoint, checkpoint.prompts.code("haze"), torch.device("cpu"), "bf16", name="haze",
                    backend="onnxruntime").precision_note
    assert note == "--backend onnxruntime runs fp32, not bf16"


def test_restore_backend_is_checked(micro_checkpoint, tmp_path):
    from dfpir_cli.errors import InputError
    from dfpir_cli.restore.pipeline import Restorer

    checkpoint = load_checkpoint(micro_checkpoint)
    with pytest.raises(InputError, match="--backend tensorrt: choose one of pytorch, onnxruntime"):
        Restorer(checkpoint, None, torch.device("cpu"), backend="tensorrt")
    with pytest.raises(InputError, match="runs on the CPU, not on meta"):
        Restorer(checkpoint, None, torch.device("meta"), backend="onnxruntime")
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(photo)
    result = runner.invoke(app, ["restore", str(photo), "-w", str(micro_checkpoint), "-d", "rain", "--backend",
                                 "onnxruntime", "-o", str(tmp_path / "out"), "--json", "--quiet"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"] == "fp32" and (tmp_path / "out" / "photo.png").is_file()
