"""The default model shipped in the package: it loads with no network, restores the shipped examples, helps."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from safetensors import safe_open
from skimage.metrics import peak_signal_noise_ratio
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.data.photos import SHIPPED_PHOTOS
from dfpir_cli.data.synthesis import synthesize
from dfpir_cli.model import PRESETS
from dfpir_cli.weights.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from dfpir_cli.weights.prompts import FIVE_TASK
from dfpir_cli.weights.resolve import DEFAULT_CHECKPOINT, resolve_weights

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EXAMPLE_FOLDERS = ("noisy", "rainy", "hazy", "blurry", "dark")
runner = CliRunner()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the network: the default model is the offline path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_shipped_checkpoint_is_small_half_precision_and_loads() -> None:
    weights = DEFAULT_CHECKPOINT / WEIGHTS_NAME
    assert (DEFAULT_CHECKPOINT / CONFIG_NAME).is_file() and weights.is_file()
    assert weights.stat().st_size < 10 * 2**20  # "a few MB"
    with safe_open(str(weights), "pt") as file:
        dtypes = {str(file.get_slice(key).get_dtype()) for key in file.keys() if key.startswith("model.")}
    assert dtypes == {"F16"}
    config = json.loads((DEFAULT_CHECKPOINT / CONFIG_NAME).read_text())
    recipe = config["metadata"]["recipe"]  # stage 1, then the fine-tune on real photos
    assert recipe.startswith("scripts/train_default_model.py") and "finetune_default_model.py" in recipe
    assert all((ROOT / "scripts" / name).is_file() for name in ("train_default_model.py", "finetune_default_model.py"))

    checkpoint = resolve_weights(None)  # no --weights: the shipped model
    assert checkpoint.config == PRESETS["small"]
    assert set(FIVE_TASK) <= set(checkpoint.prompts.names)
    assert checkpoint.prompts.encoder == "random"  # names only: no CLIP needed at restore time
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in checkpoint.model.parameters())


def test_examples_are_shipped_and_small() -> None:
    files = sorted(p for p in EXAMPLES.rglob("*") if p.is_file())
    assert {p.parent.name for p in files} == set(EXAMPLE_FOLDERS)
    assert sum(p.stat().st_size for p in files) < 1.5 * 2**20
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.ndim == 3 and max(image.shape[:2]) == 384


def test_restore_a_shipped_example_with_the_default_model(tmp_path: Path) -> None:
    """The README's main command on (a 64 px corner of) a shipped example, with no --weights."""
    source = cv2.imread(str(EXAMPLES / "hazy" / "rocket.png"), cv2.IMREAD_UNCHANGED)
    inputs = tmp_path / "hazy"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "rocket.png"), source[:64, :64])
    result = runner.invoke(app, ["restore", str(inputs), "--degradation", "hazy", "-o", str(tmp_path / "out"),
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    restored = cv2.imread(str(tmp_path / "out" / "rocket.png"), cv2.IMREAD_UNCHANGED)
    assert restored.shape == (64, 64, 3)
    assert np.abs(restored.astype(int) - source[:64, :64].astype(int)).mean() > 2  # the haze was worked on


@pytest.mark.parametrize(("degradation", "gain"), [("haze", 1.0), ("lowlight", 1.0), ("noise50", 1.0), ("blur", 0.0)])
def test_default_model_improves_a_held_out_photo(tmp_path: Path, degradation: str, gain: float) -> None:
    """A 96 px crop of a photo the model never trained on, degraded, then restored through the CLI.

    Blur only has to come out no worse: the default model barely deblurs (README), but a model that
    over-sharpens would fail here.
    """
    photo = cv2.imread(str(Path(skimage.data.data_dir) / SHIPPED_PHOTOS["chelsea"]), cv2.IMREAD_COLOR)
    photo = cv2.resize(photo, (225, 150), interpolation=cv2.INTER_AREA)[24:120, 64:160]
    clean = np.ascontiguousarray(photo[..., ::-1], dtype=np.float32) / 255.0
    degraded = synthesize(clean, degradation, np.random.default_rng(11))
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "cat.png"), (degraded * 255 + 0.5).astype(np.uint8)[..., ::-1])
    result = runner.invoke(app, ["restore", str(inputs), "-d", degradation, "-o", str(tmp_path / "out"),
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    restored = cv2.imread(str(tmp_path / "out" / "cat.png"))[..., ::-1].astype(np.float32) / 255.0
    before = peak_signal_noise_ratio(clean, degraded, data_range=1.0)
    after = peak_signal_noise_ratio(clean, restored, data_range=1.0)
    assert after > before + gain, (before, after)
