"""A photo's plan is a value: made before any pixel is restored, printable, and what the runner then does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfpir_cli.errors import InputError
from dfpir_cli.evaluate.benchmark import EvalOptions, eval_plan, restore_array
from dfpir_cli.restore.pipeline import RestoreListener, Restorer, chain_chooser, collect_inputs, restore_files, run_plan
from dfpir_cli.restore.plan import Pass, Planner, RestorePlan
from dfpir_cli.restore.tiling import count_tiles
from dfpir_cli.weights.checkpoint import load_checkpoint

CODE = torch.zeros(1, 512)
TWELVE_MP = (3000, 4000)  # height, width


def planner(**changes) -> Planner:
    settings = dict(tile=512, tone_tile=2048, overlap=32, haze_guide=256, views=1, precision="fp32", batch_size=1)
    return Planner(**(settings | changes))


def test_a_12_mp_haze_photo_runs_in_the_wide_tile_guided_by_a_thumbnail():
    plan = planner().plan(*TWELVE_MP, [("haze", CODE)])
    (step,) = plan.passes
    assert (step.name, step.tile, step.guide, step.views) == ("haze", 2048, 256, 1)
    assert step.tiles == count_tiles(*TWELVE_MP, 2048, 32) == plan.forward_passes
    assert "2048 px" in str(plan) and "256 px thumbnail" in str(plan)
    noise = planner().plan(*TWELVE_MP, [("noise25", CODE)]).passes[0]
    assert (noise.tile, noise.guide) == (512, 0)  # the faster CPU tile, no thumbnail


def test_a_chain_plans_its_passes_in_order_each_in_its_own_tile_and_views():
    plan = planner(views=8).plan(*TWELVE_MP, [("noise25", CODE), ("rain", CODE), ("lowlight", CODE)])
    assert plan.names == ("noise25", "rain", "lowlight")
    assert [step.views for step in plan.passes] == [8, 4, 8]  # self-ensemble caps rain at four views
    assert [step.tile for step in plan.passes] == [512, 512, 2048]
    assert [step.guide for step in plan.passes] == [0, 0, 2048]  # low light: its tone from a tile-sized thumbnail
    assert plan.forward_passes == sum(step.tiles * step.views for step in plan.passes)
    lines = str(plan).splitlines()
    assert lines[0].startswith("4000x3000, fp32") and [line.split(".")[0].strip() for line in lines[1:]] == ["1", "2", "3"]


def test_plans_compare_as_values_and_a_clean_plan_has_no_passes():
    assert planner().plan(40, 60, [("haze", CODE)]) == planner().plan(40, 60, [("haze", torch.ones(1, 512))])
    assert planner().plan(40, 60, [("haze", CODE)]) != planner(tone_tile=None).plan(40, 60, [("haze", CODE)])
    clean = RestorePlan(40, 60, (), "fp32", 1)
    assert clean.forward_passes == 0 and "clean" in str(clean)


def test_the_restorer_plans_what_it_runs(micro_checkpoint: Path):
    checkpoint = load_checkpoint(micro_checkpoint)
    restorer = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=16, overlap=4, views=2)
    plan = restorer.plan(24, 40, ("noise25", "haze"))
    assert plan.names == ("noise25", "haze") and plan.precision == "fp32"
    pixels = torch.rand(3, 24, 40)
    reports: list[tuple[int, int]] = []
    ran = run_plan(restorer.model, plan, pixels, torch.device("cpu"), restorer.guard,
                   lambda done, total: reports.append((done, total)))
    assert torch.equal(ran, restorer.restore(pixels, names=("noise25", "haze")))
    assert reports[-1] == (plan.forward_passes, plan.forward_passes)
    with pytest.raises(InputError, match="no prompt to restore with"):
        restorer.plan(24, 40)


def test_a_batch_reports_each_photos_plan_before_it_runs(micro_checkpoint: Path, tmp_path: Path):
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    checkpoint = load_checkpoint(micro_checkpoint)
    restorer = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=0)
    events: list[tuple[str, object]] = []

    class Listener(RestoreListener):
        def file_planned(self, source: Path, plan: RestorePlan) -> None:
            events.append(("planned", plan))

        def file_started(self, index: int, source: Path, tiles: int) -> None:
            events.append(("started", tiles))

    files, problems = collect_inputs([str(tmp_path / "in")])
    summary = restore_files(files, problems, restorer, tmp_path / "out", listener=Listener(),
                            chooser=chain_chooser(("noise25", "rain")))
    assert summary.count("processed") == 1
    (planned, plan), (started, tiles) = events
    assert (planned, started) == ("planned", "started")
    assert isinstance(plan, RestorePlan) and plan.names == ("noise25", "rain") and tiles == plan.forward_passes == 2


def test_eval_runs_its_own_one_pass_plan_through_the_same_runner(micro_checkpoint: Path):
    checkpoint = load_checkpoint(micro_checkpoint)
    options = EvalOptions(precision="fp32", views=8, haze_guide=32)
    plan = eval_plan(checkpoint, 40, 56, "rain", options, torch.device("cpu"))
    (step,) = plan.passes
    assert isinstance(step, Pass) and (step.tile, step.guide, step.views) == (None, 0, 4)  # whole; rain: 4 views
    assert eval_plan(checkpoint, 40, 56, "haze", options, torch.device("cpu")).passes[0].guide == 32
    image = np.random.default_rng(1).random((40, 56, 3), dtype=np.float32)
    restored = restore_array(checkpoint, image, "rain", options, torch.device("cpu"))
    expected = run_plan(checkpoint.model, plan, torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.device("cpu"))
    np.testing.assert_array_equal(restored, expected.permute(1, 2, 0).numpy())
