"""Self-ensemble: the views and their inverses, the mean, and --self-ensemble through restore and eval."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.errors import InputError
from dfpir_cli.evaluate.metrics import PAPER, score
from dfpir_cli.model import restore_any_size
from dfpir_cli.restore.ensemble import VIEW_COUNTS, check_views, self_ensemble, unview, view, views_for
from dfpir_cli.restore.pipeline import Restorer
from dfpir_cli.weights.checkpoint import load_checkpoint

runner = CliRunner()


def lopsided(image: torch.Tensor, progress=None) -> torch.Tensor:
    """A restoration that is not symmetric at all: running sums along rows plus a ramp down the columns."""
    if progress:
        progress(1, 1)
    ramp = torch.linspace(0, 1, image.shape[-2])[:, None]
    return image.cumsum(-1) + ramp


def test_each_view_is_undone_and_the_eight_differ() -> None:
    image = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    seen = set()
    for index in range(8):
        viewed = view(image, index)
        assert viewed.shape[-2:] == ((7, 5) if index & 4 else (5, 7))
        assert torch.equal(unview(viewed, index), image)
        seen.add(tuple(viewed.flatten().tolist()))
    assert len(seen) == 8
    assert torch.equal(view(image, 1), image.flip(-1))  # the second view is the mirror image


@pytest.mark.parametrize("views", VIEW_COUNTS)
def test_the_mean_of_the_views_undone(views: int) -> None:
    image = torch.rand(1, 3, 6, 9)
    expected = torch.stack([unview(lopsided(view(image, i)), i) for i in range(views)]).mean(0)
    reports: list[tuple[int, int]] = []
    result = self_ensemble(lopsided, image, views, lambda done, total: reports.append((done, total)))
    torch.testing.assert_close(result, expected)
    assert reports == [(i + 1, views) for i in range(views)]  # one joined count over all views
    symmetric = self_ensemble(lambda x, _p: 2 * x, image, views)  # a symmetric restoration is unchanged
    torch.testing.assert_close(symmetric, 2 * image)


def test_unknown_view_counts_are_refused() -> None:
    assert check_views(4) == 4
    for bad in (0, 3, 16):
        with pytest.raises(InputError, match="1 \\(off\\), 2"):
            check_views(bad)


def test_rain_passes_stop_at_four_views() -> None:
    assert [views_for(name, 8) for name in ("rain", "rainy", "noise25", "haze", "lowlight", None)] == \
        [4, 4, 8, 8, 8, 8]
    assert views_for("a photo taken in the rain, free text", 8) == 8  # not a name: every view asked for
    assert views_for("rain", 2) == 2


def test_a_chain_counts_each_pass_in_its_own_views(micro_checkpoint: Path) -> None:
    checkpoint = load_checkpoint(micro_checkpoint)
    restorer = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=16, overlap=4, views=8)
    tiles = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=16, overlap=4).plan(24, 32, ("haze",)).forward_passes
    assert restorer.plan(24, 32, ("noise25", "rain")).forward_passes == (8 + 4) * tiles
    reports: list[tuple[int, int]] = []
    restorer.restore(torch.rand(3, 24, 32), lambda done, total: reports.append((done, total)), ("noise25", "rain"))
    assert reports[-1] == ((8 + 4) * tiles, (8 + 4) * tiles)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)  # the bar only moves forward


def test_restorer_averages_the_mirror_image(micro_checkpoint: Path) -> None:
    checkpoint = load_checkpoint(micro_checkpoint)
    pixels = torch.rand(3, 20, 28)
    code = checkpoint.prompts.code("rain")
    restorer = Restorer(checkpoint, code, torch.device("cpu"), "fp32", tile=0, views=2)
    with torch.no_grad():
        plain = restore_any_size(checkpoint.model, pixels[None], code[None])
        mirrored = restore_any_size(checkpoint.model, pixels.flip(-1)[None], code[None]).flip(-1)
    torch.testing.assert_close(restorer.restore(pixels), ((plain + mirrored) / 2).clamp(0, 1)[0],
                               atol=1e-5, rtol=1e-5)
    assert restorer.plan(20, 28).forward_passes == 2
    assert Restorer(checkpoint, code, torch.device("cpu"), "fp32", tile=16, overlap=4, views=8).plan(20, 28).forward_passes == \
        8 * Restorer(checkpoint, code, torch.device("cpu"), "fp32", tile=16, overlap=4).plan(20, 28).forward_passes


def test_restore_cli_self_ensemble(micro_checkpoint: Path, tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    base = ["restore", str(tmp_path / "a.png"), "-d", "rain", "-w", str(micro_checkpoint), "--json"]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "x4"), "--self-ensemble", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["self_ensemble"] == 4 and json.loads(result.stdout)["self_ensemble_capped"] == {}
    checkpoint = load_checkpoint(micro_checkpoint)
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    code = checkpoint.prompts.code("rain")[None]
    with torch.no_grad():
        expected = torch.stack([unview(checkpoint.model(view(image, i), code), i) for i in range(4)]).mean(0)
    expected = (expected.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round()
    written = np.asarray(Image.open(tmp_path / "x4" / "a.png"))
    assert np.abs(written.astype(float) - expected).max() <= 1  # bf16 or fp32, rounding aside
    eight = runner.invoke(app, [*base, "-o", str(tmp_path / "x8"), "--self-ensemble", "8"])
    assert eight.exit_code == 0 and json.loads(eight.stdout)["self_ensemble"] == 8
    assert json.loads(eight.stdout)["self_ensemble_capped"] == {"rain": 4}  # the views that ran
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x8" / "a.png")), written)  # rain: 4 views
    plain = runner.invoke(app, [*base, "-o", str(tmp_path / "x1")])
    assert json.loads(plain.stdout)["self_ensemble"] == 1
    refused = runner.invoke(app, [*base[:-1], "-o", str(tmp_path / "bad"), "--self-ensemble", "3"])
    assert refused.exit_code == 2 and "--self-ensemble 3" in refused.output
    assert not (tmp_path / "bad").exists()


def test_eval_cli_self_ensemble(micro_checkpoint: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for folder in ("in", "gt"):
        (tmp_path / folder).mkdir()
    for name in ("p.png", "q.png"):
        clean = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
        Image.fromarray(clean).save(tmp_path / "gt" / name)
        noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(tmp_path / "in" / name)
    base = ["eval", "-d", "paired", "--input-dir", str(tmp_path / "in"), "--target-dir", str(tmp_path / "gt"),
            "-g", "noise25", "-w", str(micro_checkpoint), "--device", "cpu", "--precision", "fp32", "--json"]
    reports = {}
    for views in (1, 8):
        result = runner.invoke(app, [*base, "--self-ensemble", str(views), "--csv", str(tmp_path / f"{views}.csv")])
        assert result.exit_code == 0, result.output
        reports[views] = json.loads(result.stdout)
        assert reports[views]["self_ensemble"] == reports[views]["sets"][0]["self_ensemble"] == views
        assert {row["self_ensemble"] for row in csv.DictReader((tmp_path / f"{views}.csv").open())} == {str(views)}
    assert reports[1]["sets"][0]["psnr"] != reports[8]["sets"][0]["psnr"]  # the views were averaged
    checkpoint = load_checkpoint(micro_checkpoint)
    code = checkpoint.prompts.code("noise25")[None]
    scores = []
    for name in ("p.png", "q.png"):
        degraded, clean = (np.asarray(Image.open(tmp_path / f / name)) / 255.0 for f in ("in", "gt"))
        image = torch.from_numpy(degraded).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            mean = torch.stack([unview(checkpoint.model(view(image, i), code), i) for i in range(8)]).mean(0)
        scores.append(score(mean.clamp(0, 1)[0].permute(1, 2, 0).numpy(), clean, PAPER)[0])
    assert abs(np.mean(scores) - reports[8]["sets"][0]["psnr"]) < 1e-3
    rain = runner.invoke(app, [*("rain" if arg == "noise25" else arg for arg in base), "--self-ensemble", "8"])
    assert json.loads(rain.stdout)["sets"][0]["self_ensemble"] == 4  # rain ran in four views
    refused = runner.invoke(app, [*base, "--self-ensemble", "5"])
    assert refused.exit_code == 2 and "--self-ensemble 5" in refused.output
