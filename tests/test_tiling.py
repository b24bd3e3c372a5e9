"""Tiled inference against the untiled result: blending weights, exactness on a local model, DFPIR agreement
(PSNR >= 40 dB on a 512x512 photo with 256-px tiles and 32-px overlap), no seams, and the automatic tile size."""

from __future__ import annotations

import pytest
import torch
from conftest import MICRO
from torch import nn

from dfpir_cli.errors import InputError
from dfpir_cli.model import DFPIR, DFPIRConfig, restore_any_size
from dfpir_cli.restore.pipeline import Restorer
from dfpir_cli.restore.tiling import (
    _axis_plan,
    auto_tile_size,
    computed_pixels,
    count_tiles,
    fitted_tile,
    restore_tiled,
    scale_guided,
    tile_shape,
)
from dfpir_cli.weights.checkpoint import load_checkpoint
from dfpir_cli.weights.resolve import resolve_weights

TILE, OVERLAP = 256, 32
MICRO_MULTIPLE = DFPIR.multiple_of


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(1 / (a - b).pow(2).mean())).item()


class LocalNet(nn.Module):
    """A stand-in restorer whose output depends on a 5x5 neighbourhood only (two 3x3 convolutions)."""

    multiple_of = 8

    def __init__(self) -> None:
        super().__init__()
        self.config = DFPIRConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, text_dim=4)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, image: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        assert image.shape[-1] % 8 == 0 and image.shape[-2] % 8 == 0
        return image + self.body(image) * code[:, :1, None, None]


@pytest.mark.parametrize("length,size,overlap", [(512, 256, 32), (1000, 256, 32), (300, 256, 8), (100, 64, 0),
                                                 (64, 64, 16), (40, 64, 16)])
def test_blending_weights_are_a_smooth_partition_of_unity(length, size, overlap):
    plan = _axis_plan(length, size, overlap)
    total = torch.zeros(length, dtype=torch.float64)
    for start, weight in plan:
        assert weight.min() > 0  # the window never reaches zero
        total[start:start + weight.shape[0]] += weight
    torch.testing.assert_close(total, torch.ones(length, dtype=torch.float64))
    assert plan[0][0] == 0 and plan[-1][0] + plan[-1][1].shape[0] == length  # flush with both borders
    for (first, weight), (second, _) in zip(plan, plan[1:], strict=False):
        assert first + weight.shape[0] - second >= overlap  # every overlap is at least what was asked


def test_local_model_tiled_matches_untiled_including_odd_sizes_and_batches():
    torch.manual_seed(0)
    model = LocalNet().eval()
    image = torch.rand(2, 3, 75, 101)
    codes = torch.tensor([[1.0, 0, 0, 0], [-0.5, 0, 0, 0]])
    with torch.no_grad():
        whole = restore_any_size(model, image, codes)
    calls = []
    tiled = restore_tiled(model, image, codes, tile=32, overlap=12, batch_size=5,
                          progress=lambda done, total: calls.append((done, total)))
    assert tiled.shape == image.shape and tiled.dtype == torch.float32
    # Only the convolutions' zero padding at tile edges differs, and the blend gives those pixels tiny weights.
    # (The untiled run reflect-pads the right and bottom to a multiple of 8; tiles there end at the border.)
    inner = (..., slice(None, -2), slice(None, -2))
    assert (tiled - whole)[inner].abs().max() < 5e-3
    assert psnr(tiled[inner], whole[inner]) > 60
    one_by_one = restore_tiled(model, image, codes, tile=32, overlap=12, batch_size=1)
    torch.testing.assert_close(tiled, one_by_one, atol=1e-6, rtol=1e-6)
    total = 2 * count_tiles(75, 101, 32, 12)
    assert calls[-1] == (total, total) and len(calls) == -(-total // 5)


def test_image_smaller_than_the_tile_runs_whole():
    torch.manual_seed(0)
    model = DFPIR(MICRO).eval()
    image, codes = torch.rand(1, 3, 20, 30), torch.randn(1, MICRO.text_dim)
    with torch.no_grad():
        expected = restore_any_size(model, image, codes)
    torch.testing.assert_close(restore_tiled(model, image, codes, tile=64, overlap=16), expected)
    torch.testing.assert_close(restore_tiled(model, image, codes, tile=None, overlap=16), expected)
    assert count_tiles(20, 30, 64, 16) == 1


def test_batches_go_through_the_forward_given():
    """A caller's ``forward`` (restore's FiniteGuard) runs every batch, whole image or tiles; the result is its own."""
    torch.manual_seed(0)
    model = LocalNet().eval()
    image, codes = torch.rand(1, 3, 40, 56), torch.ones(1, 4)
    batches: list[int] = []

    def forward(tiles: torch.Tensor, tile_codes: torch.Tensor) -> torch.Tensor:
        batches.append(tiles.shape[0])
        return model(tiles, tile_codes)

    for tile, expected in ((None, [1]), (32, [2] * (count_tiles(40, 56, 32, 8) // 2))):
        batches.clear()
        torch.testing.assert_close(restore_tiled(model, image, codes, tile, 8, batch_size=2, forward=forward),
                                   restore_tiled(model, image, codes, tile, 8, batch_size=2))
        assert batches == expected


def test_thin_strip_pads_each_tile_not_the_image():
    model = LocalNet().eval()
    image, codes = torch.rand(1, 3, 5, 90), torch.ones(1, 4)  # 5 rows: the tiles are 8 rows, replicate-padded
    out = restore_tiled(model, image, codes, tile=32, overlap=8)
    assert out.shape == image.shape and torch.isfinite(out).all()


def test_bad_arguments_are_clear_errors():
    model = LocalNet().eval()
    image = torch.rand(1, 3, 64, 64)
    with pytest.raises(InputError, match="overlap"):
        restore_tiled(model, image, torch.ones(1, 4), tile=32, overlap=32)
    with pytest.raises(InputError, match="prompt code"):
        restore_tiled(model, image, torch.ones(2, 4), tile=32, overlap=8)
    with pytest.raises(InputError, match="batch size"):
        restore_tiled(model, image, torch.ones(1, 4), tile=32, overlap=8, batch_size=0)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    from skimage import data  # astronaut.png ships inside scikit-image: no network

    return torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def near_identity_micro() -> DFPIR:
    """MICRO with random weights, its output layer scaled by 0.1.

    Unscaled, a random DFPIR adds a residual of mean 0.046 to a clean photo, far more than a trained
    restorer does, and MDTA's channel attention is global over a tile: the tiles then see different
    statistics than the whole image and the PSNR between tiled and untiled is 27-32 dB (spread evenly, not at
    seams). Scaled, the residual is 0.004-0.005 and the agreement is what the tiling itself achieves.
    """
    torch.manual_seed(0)
    model = DFPIR(MICRO).eval()
    with torch.no_grad():
        model.output.weight.mul_(0.1)
    return model


@pytest.fixture(scope="module")
def tiled_and_whole(near_identity_micro, photo):
    codes = torch.randn(1, MICRO.text_dim, generator=torch.Generator().manual_seed(1))
    whole = restore_tiled(near_identity_micro, photo, codes, tile=None, overlap=OVERLAP)
    tiled = restore_tiled(near_identity_micro, photo, codes, tile=TILE, overlap=OVERLAP, batch_size=3)
    return tiled, whole, codes


def test_tiled_agrees_with_untiled_on_a_512px_photo(tiled_and_whole, photo):
    tiled, whole, _ = tiled_and_whole
    assert photo.shape[-2:] == (512, 512)
    assert (whole - photo).abs().mean() > 1e-3  # the network does change the image
    assert psnr(tiled, whole) >= 40.0


def seam_band(length: int, halo: int = 2) -> torch.Tensor:
    """Row boundaries (row i to i+1) within ``halo`` of a tile edge or an overlap centre: where seams show."""
    plan = _axis_plan(length, tile_shape(length, length, TILE, OVERLAP, MICRO_MULTIPLE)[0], OVERLAP)
    lines = [edge for start, weight in plan for edge in (start - 1, start + weight.shape[0] - 1)]
    lines += [(first + weight.shape[0] + second) // 2 - 1
              for (first, weight), (second, _) in zip(plan, plan[1:], strict=False)]
    mask = torch.zeros(length - 1, dtype=torch.bool)
    for line in lines:
        mask[max(0, line - halo):max(0, line + halo + 1)] = True
    return mask


def jump_profile(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute jump across each row boundary and each column boundary (the larger of the two)."""
    rows = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=(0, 1, 3))
    columns = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    return torch.maximum(rows, columns)


# A jump across a tile border may exceed the largest jump elsewhere by at most 10%. Measured: 0.92x on the
# tiled - untiled difference (the difference is content noise from the tiles' own attention statistics).
SEAM_MARGIN = 1.10


def test_no_seam_at_tile_borders(tiled_and_whole):
    tiled, whole, _ = tiled_and_whole
    band = seam_band(512)
    for name, image in (("output", tiled), ("tiled - untiled", tiled - whole)):
        jumps = jump_profile(image)
        assert jumps[band].max() <= SEAM_MARGIN * jumps[~band].max(), name
    # The measure has teeth: a step of 3/255 along one tile border is flagged.
    stepped = tiled - whole
    edge = _axis_plan(512, tile_shape(512, 512, TILE, OVERLAP, MICRO_MULTIPLE)[0], OVERLAP)[1][0]
    stepped[..., edge:, :edge] += 3 / 255
    jumps = jump_profile(stepped)
    assert jumps[band].max() > SEAM_MARGIN * jumps[~band].max()


def test_auto_tile_size_follows_free_memory():
    gib = 1024**3
    assert auto_tile_size("cpu", MICRO, free_bytes=64 * gib) == 512  # CPU cap
    assert auto_tile_size("cuda", MICRO, free_bytes=64 * gib) == 2048  # GPU cap
    assert auto_tile_size("cpu", MICRO, free_bytes=1024) == 64  # never below the floor
    assert auto_tile_size("cpu", MICRO, free_bytes=64 * gib, speed_cap=False) == 2048  # memory (and 2048) only
    assert auto_tile_size("cpu", MICRO, free_bytes=1024, speed_cap=False) == 64
    paper = DFPIRConfig()
    sizes = [auto_tile_size("cuda", paper, free_bytes=n * gib) for n in (1, 2, 4, 8)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4 and all(s % 8 == 0 for s in sizes)
    assert auto_tile_size("cuda", paper, torch.float16, free_bytes=2 * gib) > sizes[1]  # half the bytes
    assert auto_tile_size("cuda", paper, free_bytes=8 * gib, batch_size=4) < sizes[3]
    measured = auto_tile_size("cpu", MICRO)
    assert 64 <= measured <= 512 and measured % 8 == 0


def test_tiles_shrink_to_fit_without_more_passes():
    # 12 MP at 512 px tiles: 7 x 9 passes either way, but 456 x 480 tiles instead of 512 x 512.
    assert tile_shape(3000, 4000, 512, 32, 8) == (456, 480)
    assert computed_pixels(3000, 4000, 512, 32) / (3000 * 4000) == pytest.approx(1.149, abs=0.001)  # was 1.377
    assert count_tiles(3000, 4000, 512, 32) == 7 * 9
    for length in range(200, 3000, 37):
        for size, overlap in ((512, 32), (256, 48), (128, 16)):
            fitted = fitted_tile(length, size, overlap, 8)
            assert fitted % 8 == 0 and fitted <= max(size, length)
            assert len(_axis_plan(length, fitted, overlap)) == len(_axis_plan(length, min(size, length), overlap))
            starts = [start for start, _ in _axis_plan(length, fitted, overlap)]
            assert all(b - a <= fitted - overlap for a, b in zip(starts, starts[1:], strict=False))  # overlap kept
    assert computed_pixels(300, 400, None, 32) == 304 * 400  # whole: padded to the network's multiple


def test_haze_and_low_light_run_in_the_widest_tile_memory_allows(micro_checkpoint):
    # Tiles would each set the photo's brightness or airlight for themselves: LOL 18.59 dB in 512 px tiles,
    # 19.27 whole (plan.TONE_FAMILIES). The other prompts keep the faster 512 px CPU tile.
    checkpoint = load_checkpoint(micro_checkpoint)
    auto = Restorer(checkpoint, None, torch.device("cpu"), "fp32")
    planner = auto.planner
    assert planner.tile == 512 and planner.tone_tile is not None and planner.tone_tile > 512  # the micro model is tiny
    assert [auto.planner.tile_for(name) for name in ("noise25", "rain", "blur", None, "free text")] == [512] * 5
    assert auto.planner.tile_for("hazy") == auto.planner.tile_for("lowlight") == auto.planner.tone_tile
    assert auto.plan(40, 600, ("noise25", "haze")).forward_passes == count_tiles(40, 600, 512, auto.planner.overlap, 8) + 1
    pixels = torch.rand(3, 40, 600)
    code = checkpoint.prompts.code("lowlight")
    with torch.no_grad():
        whole = restore_any_size(checkpoint.model, pixels[None], code[None]).clamp(0, 1)[0]
    torch.testing.assert_close(auto.restore(pixels, names=("lowlight",)), whole)
    fixed = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=64, overlap=8)
    assert fixed.planner.tile_for("haze") == fixed.planner.tile_for("noise25") == 64  # --tile is the tile of every pass


def test_scale_guided_keeps_the_detail_and_takes_the_tone_of_the_thumbnail():
    image = torch.rand(1, 3, 96, 160)
    reports: list[tuple[int, int]] = []

    def darker(view, progress):  # a "restoration" whose tone depends on the size it sees
        if progress:
            progress(1, 1)
        return view * (0.5 if view.shape[-1] <= 64 else 1.0)
    guided = scale_guided(darker, image, 64, lambda done, total: reports.append((done, total)))
    assert reports == [(1, 1)]  # only the full-size pass reports progress
    detail = image - torch.nn.functional.avg_pool2d(image, 15, 1, 7, count_include_pad=False)
    guided_detail = guided - torch.nn.functional.avg_pool2d(guided, 15, 1, 7, count_include_pad=False)
    assert (guided_detail - detail)[..., 20:-20, 20:-20].abs().mean() < 0.05  # the detail stays
    assert abs(guided.mean().item() - 0.5 * image.mean().item()) < 0.02  # the tone is the thumbnail's
    assert torch.equal(scale_guided(darker, image, 0), image)  # 0: off
    assert torch.equal(scale_guided(darker, image, 160), image)  # no larger than the thumbnail: as it is
    same = scale_guided(lambda view, _progress: view, image, 64)  # an identity restorer is left alone
    torch.testing.assert_close(same, image, atol=1e-5, rtol=0)


def test_haze_passes_are_guided_by_a_thumbnail(micro_checkpoint):
    checkpoint = load_checkpoint(micro_checkpoint)
    guided = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=0, haze_guide=256)
    plain = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=0)
    assert [guided.planner.guide_for(name) for name in ("hazy", "rain", "lowlight")] == [256, 0, 0]
    assert plain.planner.haze_guide == 0  # the micro checkpoint's metadata does not ask for the guide
    assert Restorer(resolve_weights(None), None, torch.device("cpu"), "fp32").planner.haze_guide == 256  # the default's does
    pixels = torch.rand(3, 40, 300)
    for name in ("noise25", "lowlight"):
        torch.testing.assert_close(guided.restore(pixels, names=(name,)), plain.restore(pixels, names=(name,)))
    code = checkpoint.prompts.code("haze")[None]

    def whole(view, _progress):
        return restore_any_size(checkpoint.model, view, code.expand(view.shape[0], -1))
    with torch.no_grad():
        expected = scale_guided(whole, pixels[None], 256).clamp(0, 1)[0]
    torch.testing.assert_close(guided.restore(pixels, names=("haze",)), expected)
    assert not torch.allclose(expected, plain.restore(pixels, names=("haze",)))
    with pytest.raises(InputError, match="--haze-guide -1"):
        Restorer(checkpoint, None, torch.device("cpu"), "fp32", haze_guide=-1)
    checkpoint.metadata["haze_guide"] = 64  # a checkpoint may ask for it
    assert Restorer(checkpoint, None, torch.device("cpu"), "fp32").planner.haze_guide == 64
    assert Restorer(checkpoint, None, torch.device("cpu"), "fp32", haze_guide=0).planner.haze_guide == 0  # --haze-guide 0 wins


def test_haze_guide_option_of_restore_and_eval(micro_checkpoint, tmp_path):
    import json

    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from dfpir_cli.cli import app

    runner = CliRunner()
    rng = np.random.default_rng(3)
    for folder in ("in", "gt"):
        (tmp_path / folder).mkdir()
    for name in ("p.png", "q.png"):
        Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(tmp_path / "gt" / name)
        Image.fromarray(rng.integers(100, 256, (48, 80, 3), dtype=np.uint8)).save(tmp_path / "in" / name)
    scores = {}
    for guide in ("0", "32"):
        result = runner.invoke(app, ["eval", "-d", "paired", "--input-dir", str(tmp_path / "in"), "--target-dir",
                                     str(tmp_path / "gt"), "-g", "hazy", "-w", str(micro_checkpoint), "--device",
                                     "cpu", "--precision", "fp32", "--haze-guide", guide, "--json"])
        assert result.exit_code == 0, result.output
        scores[guide] = json.loads(result.stdout)
        assert scores[guide]["haze_guide"] == int(guide)
    assert scores["0"]["sets"][0]["psnr"] != scores["32"]["sets"][0]["psnr"]
    written = {}
    for guide in ("0", "32", None):
        option = ["--haze-guide", guide] if guide else []
        result = runner.invoke(app, ["restore", str(tmp_path / "in" / "p.png"), "-d", "hazy", "-w", str(micro_checkpoint),
                                     "-o", str(tmp_path / str(guide)), *option, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["haze_guide"] == int(guide or 0)  # default: the checkpoint's (none)
        written[guide] = (tmp_path / str(guide) / "p.png").read_bytes()
    assert written["0"] != written["32"] and written["0"] == written[None]
    refused = runner.invoke(app, ["restore", str(tmp_path / "in"), "-d", "hazy", "--haze-guide", "-1"])
    assert refused.exit_code == 2 and "--haze-guide" in refused.output


def test_low_light_larger_than_its_tile_takes_its_tone_from_a_thumbnail_of_that_size(micro_checkpoint):
    checkpoint = load_checkpoint(micro_checkpoint)
    tiled = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=64, overlap=8, haze_guide=0)
    assert [tiled.planner.guide_for(name) for name in ("lowlight", "haze", "noise25", "rain")] == [64, 64, 0, 0]
    whole = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=0, haze_guide=256)
    assert whole.planner.guide_for("lowlight") == 0 and whole.planner.guide_for("haze") == 256
    pixels = torch.rand(3, 40, 200)
    code = checkpoint.prompts.code("lowlight")[None]

    def tiles(view, _progress):
        return restore_tiled(checkpoint.model, view, code.expand(view.shape[0], -1), 64, 8, 1)
    with torch.no_grad():
        expected = scale_guided(tiles, pixels[None], 64).clamp(0, 1)[0]
    torch.testing.assert_close(tiled.restore(pixels, names=("lowlight",)), expected)


def test_the_thumbnail_is_never_larger_than_the_tile(micro_checkpoint):
    checkpoint = load_checkpoint(micro_checkpoint)
    small_tile = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=128, overlap=8, haze_guide=256)
    assert small_tile.planner.guide_for("haze") == 128  # a 256 px thumbnail would itself be cut into 128 px tiles
    assert Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=512, haze_guide=256).planner.guide_for("haze") == 256
    auto = Restorer(checkpoint, None, torch.device("cpu"), "fp32")
    assert auto.planner.tone_tile is not None and auto.planner.tone_tile % 256 == 0  # in steps: free memory barely matters
    checkpoint.metadata["haze_guide"] = True
    with pytest.raises(InputError, match="metadata asks for haze_guide True"):
        Restorer(checkpoint, None, torch.device("cpu"), "fp32")
