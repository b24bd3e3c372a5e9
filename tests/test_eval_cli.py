"""`dfpir eval` end to end on tiny datasets written to disk.

An identity model (output convolution zeroed, so the global residual returns the input) makes the
expected scores computable independently: scikit-image on the same centre-cropped pairs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import MICRO, make_checkpoint
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.data.test_sets import find_dataset
from dfpir_cli.evaluate.benchmark import EvalOptions, evaluate_set
from dfpir_cli.weights.checkpoint import load_checkpoint, save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def identity_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("identity")
    checkpoint = load_checkpoint(make_checkpoint(folder / "random", MICRO, seed=1))
    with torch.no_grad():
        checkpoint.model.output.weight.zero_()
        if checkpoint.model.output.bias is not None:
            checkpoint.model.output.bias.zero_()
    return save_checkpoint(folder / "identity", checkpoint.model, checkpoint.prompts, checkpoint.metadata)


def photo(seed: int, height: int, width: int) -> np.ndarray:
    """A textured RGB uint8 image: smooth gradients plus noise, so SSIM is not trivial."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 128 / (height + width)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def save_rgb(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image[..., ::-1])
    return path


def crop16(image: np.ndarray) -> np.ndarray:
    """The reference's crop_img(base=16), written out independently."""
    h, w = image.shape[:2]
    ch, cw = h % 16, w % 16
    return image[ch // 2:h - ch + ch // 2, cw // 2:w - cw + cw // 2]


def expected(degraded: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    a, b = crop16(degraded).astype(np.float64) / 255, crop16(clean).astype(np.float64) / 255
    return (peak_signal_noise_ratio(b, a, data_range=1), structural_similarity(b, a, data_range=1, channel_axis=-1))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def make_sots(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    pairs = {}
    for index, (h, w) in enumerate([(37, 50), (48, 40)], start=1):
        clean = photo(index, h, w)
        hazy = np.clip(clean * 0.6 + 90, 0, 255).astype(np.uint8)
        save_rgb(root / "input" / f"000{index}_0.8_0.2.png", hazy)
        save_rgb(root / "target" / f"000{index}.png", clean)
        pairs[f"000{index}_0.8_0.2.png"] = (hazy, clean)
    return pairs


def test_identity_model_scores_equal_scikit_image_on_cropped_pairs(identity_checkpoint: Path, tmp_path: Path) -> None:
    pairs = make_sots(tmp_path / "SOTS")
    result = runner.invoke(app, ["eval", "--dataset", "SOTS", "--root", str(tmp_path / "SOTS"), "--weights",
                                 str(identity_checkpoint), "--device", "cpu", "--csv", str(tmp_path / "r.csv"),
                                 "--save-dir", str(tmp_path / "saved")])
    assert result.exit_code == 0, result.output
    assert "SOTS" in result.output and "31.64" in result.output  # a 5-task model: Table 2's SOTS
    rows = read_csv(tmp_path / "r.csv")
    assert [row["image"] for row in rows] == list(pairs)
    for row in rows:
        psnr, ssim = expected(*pairs[row["image"]])
        assert abs(float(row["psnr"]) - psnr) < 1e-6 and abs(float(row["ssim"]) - ssim) < 1e-6
        assert abs(float(row["input_psnr"]) - psnr) < 1e-6 and row["error"] == ""
    saved = sorted(p.relative_to(tmp_path / "saved").as_posix() for p in (tmp_path / "saved").rglob("*.png"))
    assert saved == ["SOTS/0001_0.8_0.2.png", "SOTS/0002_0.8_0.2.png"]
    restored = cv2.imread(str(tmp_path / "saved" / "SOTS" / "0001_0.8_0.2.png"))[..., ::-1]
    assert np.array_equal(restored, crop16(pairs["0001_0.8_0.2.png"][0]))  # identity: the cropped input


def test_noise_protocol_seed_0_uint8(identity_checkpoint: Path, tmp_path: Path) -> None:
    """CBSD68: noise from one RandomState(0) stream over the sorted images, added to the cropped uint8 image."""
    cleans = {"a.png": photo(5, 40, 35), "b.png": photo(6, 32, 48)}
    for name, image in cleans.items():
        save_rgb(tmp_path / "CBSD68" / name, image)
    result = runner.invoke(app, ["eval", "-d", "cbsd68", "--root", str(tmp_path / "CBSD68"), "--sigma", "25",
                                 "-w", str(identity_checkpoint), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (entry,) = report["sets"]
    assert entry["label"] == "CBSD68 sigma=25" and entry["images"] == 2
    stream = np.random.RandomState(0)
    scores = []
    for name in sorted(cleans):
        clean = crop16(cleans[name])
        noisy = np.clip(clean + stream.randn(*clean.shape) * 25, 0, 255).astype(np.uint8)
        scores.append(expected(noisy, clean))
    assert abs(entry["psnr"] - np.mean([s[0] for s in scores])) < 1e-6
    assert abs(entry["ssim"] - np.mean([s[1] for s in scores])) < 1e-6
    assert entry["paper_psnr"] == 31.29  # the micro checkpoint knows 5 tasks: Table 2
    assert report["conventions"]["y_channel"] is False and "uniform 7x7" in report["conventions"]["description"]


def test_conventions_options_change_the_scores(identity_checkpoint: Path, tmp_path: Path) -> None:
    pairs = make_sots(tmp_path / "SOTS")
    result = runner.invoke(app, ["eval", "-d", "SOTS", "--root", str(tmp_path / "SOTS"), "-w", str(identity_checkpoint),
                                 "--device", "cpu", "--json", "--y-channel", "--ssim-gaussian", "--crop-border", "4",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["conventions"]["y_channel"] and report["conventions"]["ssim_gaussian"]
    assert "Y channel" in report["conventions"]["description"]
    ys = []
    for hazy, clean in pairs.values():
        weights = np.array([65.481, 128.553, 24.966])
        a = ((16 + crop16(hazy) / 255 @ weights) / 255)[4:-4, 4:-4]
        b = ((16 + crop16(clean) / 255 @ weights) / 255)[4:-4, 4:-4]
        ys.append(structural_similarity(b, a, data_range=1, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False))
    assert abs(report["sets"][0]["ssim"] - np.mean(ys)) < 1e-6


def test_bad_files_are_reported_and_the_run_goes_on(identity_checkpoint: Path, tmp_path: Path) -> None:
    root = tmp_path / "Rain100L"
    save_rgb(root / "input" / "rain-1.png", photo(1, 32, 32))
    save_rgb(root / "target" / "norain-1.png", photo(2, 32, 32))
    save_rgb(root / "input" / "rain-2.png", photo(3, 32, 32))
    save_rgb(root / "target" / "norain-2.png", photo(4, 48, 32))  # size mismatch
    (root / "input" / "rain-3.png").write_bytes(b"this is not a png")  # unreadable
    save_rgb(root / "target" / "norain-3.png", photo(5, 32, 32))
    save_rgb(root / "input" / "rain-4.png", photo(6, 32, 32))  # no target
    result = runner.invoke(app, ["eval", "-d", "Rain100L", "--root", str(root), "-w", str(identity_checkpoint),
                                 "--device", "cpu", "--csv", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "rain-4.png (input in input/): no target" in output
    assert "rain-2.png skipped: size mismatch" in output and "rain-3.png skipped" in output
    assert "failed" in output
    rows = {row["image"]: row for row in read_csv(tmp_path / "r.csv")}
    assert rows["rain-1.png"]["error"] == "" and float(rows["rain-1.png"]["psnr"]) > 0
    assert "size mismatch" in rows["rain-2.png"]["error"] and rows["rain-2.png"]["psnr"] == ""
    assert "corrupt" in rows["rain-3.png"]["error"] or "cannot" in rows["rain-3.png"]["error"]


def test_layout_mismatch_and_usage_errors_exit_2(identity_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DFPIR_DATA", str(tmp_path / "empty-data"))
    save_rgb(tmp_path / "photos" / "x.png", photo(0, 16, 16))
    cases = [
        (["-d", "SOTS", "--root", str(tmp_path / "photos")], "expected input/NNNN_a_b.png"),
        (["-d", "GoPro", "--root", str(tmp_path / "nowhere")], "does not exist"),
        (["-d", "paired", "--input-dir", str(tmp_path / "photos")], "needs --input-dir, --target-dir"),
        (["-d", "SOTS"], "SOTS is not in the datasets folder"),
        ([], "say what to evaluate"),
        (["--tasks", "4", "--root", str(tmp_path)], "3 or 5"),
        (["-d", "synthetic", "-g", "snow"], "unknown degradation 'snow'"),
    ]
    for arguments, message in cases:
        result = runner.invoke(app, ["eval", *arguments, "-w", str(identity_checkpoint), "--device", "cpu"])
        assert result.exit_code == 2, (arguments, result.output)
        assert message in " ".join(result.output.split()), (arguments, result.output)


def test_unknown_prompt_for_the_checkpoint_fails_before_work(tmp_path: Path) -> None:
    from conftest import make_prompts

    from dfpir_cli.model import DFPIR

    torch.manual_seed(0)
    folder = save_checkpoint(tmp_path / "three", DFPIR(MICRO).eval(),
                             make_prompts(MICRO.text_dim, ("noise15", "noise25", "noise50", "rain", "haze")))
    save_rgb(tmp_path / "LOL" / "low" / "1.png", photo(0, 16, 16))
    save_rgb(tmp_path / "LOL" / "high" / "1.png", photo(1, 16, 16))
    result = runner.invoke(app, ["eval", "-d", "LOL", "--root", str(tmp_path / "LOL"), "-w", str(folder),
                                 "--device", "cpu"])
    assert result.exit_code == 2 and "does not know the degradation 'lowlight'" in result.output


def test_paired_and_synthetic_with_own_images(identity_checkpoint: Path, tmp_path: Path) -> None:
    save_rgb(tmp_path / "A" / "p.jpg", photo(1, 40, 40))
    save_rgb(tmp_path / "B" / "p.png", photo(2, 40, 40))
    save_rgb(tmp_path / "B" / "q.png", photo(3, 40, 40))
    result = runner.invoke(app, ["eval", "-d", "paired", "--input-dir", str(tmp_path / "A"), "--target-dir",
                                 str(tmp_path / "B"), "-g", "dark", "-w", str(identity_checkpoint), "--device", "cpu",
                                 "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)["sets"]
    assert entry["degradation"] == "lowlight" and entry["images"] == 1 and entry["paper_psnr"] is None
    assert entry["unpaired"] == ["q.png (target in B/): no input"]

    result = runner.invoke(app, ["eval", "-d", "synthetic", "--images", str(tmp_path / "B"), "--size", "32",
                                 "-g", "rain", "-g", "noise50", "-w", str(identity_checkpoint), "--device", "cpu",
                                 "--json", "--seed", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["label"] for s in report["sets"]] == ["synthetic rain", "synthetic noise50"]
    for entry in report["sets"]:  # identity: the model scores what its input scores
        assert entry["images"] == 2 and abs(entry["psnr"] - entry["input_psnr"]) < 1e-6
        assert entry["psnr"] < 30
    again = json.loads(runner.invoke(app, ["eval", "-d", "synthetic", "--images", str(tmp_path / "B"), "--size",
                                           "32", "-g", "rain", "-g", "noise50", "-w", str(identity_checkpoint),
                                           "--device", "cpu", "--json", "--seed", "5"]).stdout)
    assert again["sets"] == report["sets"]  # seeded: the same numbers every run


def test_synthetic_default_photos_table(identity_checkpoint: Path) -> None:
    result = runner.invoke(app, ["eval", "-d", "synthetic", "--size", "48", "-w", str(identity_checkpoint),
                                 "--device", "cpu", "-g", "haze", "-g", "blur"])
    assert result.exit_code == 0, result.output
    assert "synthetic haze" in result.output and "synthetic blur" in result.output and "average" in result.output
    assert "astronaut, coffee, chelsea, rocket" in " ".join(result.output.split())


def test_suite_and_tiled_restoration_match_whole_image(identity_checkpoint: Path, tmp_path: Path) -> None:
    root = tmp_path / "suite"
    make_sots(root / "SOTS")
    save_rgb(root / "Rain100L" / "input" / "rain-1.png", photo(7, 64, 64))
    save_rgb(root / "Rain100L" / "target" / "norain-1.png", photo(8, 64, 64))
    save_rgb(root / "CBSD68" / "a.png", photo(9, 64, 48))
    result = runner.invoke(app, ["eval", "--tasks", "3", "--root", str(root), "-w", str(identity_checkpoint),
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["label"] for s in report["sets"]] == ["SOTS", "Rain100L", "CBSD68 sigma=15", "CBSD68 sigma=25",
                                                    "CBSD68 sigma=50"]
    assert report["paper_table"] == 3 and report["average"]["paper_psnr"] == 32.88
    assert abs(report["average"]["psnr"] - np.mean([s["psnr"] for s in report["sets"]])) < 1e-6

    # Tiles through restore_tiled give the same scores as the whole image for the identity model.
    checkpoint = load_checkpoint(identity_checkpoint)
    (rain,) = find_dataset("Rain100L", root / "Rain100L")
    whole = evaluate_set(checkpoint, rain, EvalOptions(tile=0))
    tiled = evaluate_set(checkpoint, rain, EvalOptions(tile=32, overlap=8))
    assert abs(whole.mean("psnr") - tiled.mean("psnr")) < 1e-4


def test_all_datasets_under_a_root_with_the_classic_method(identity_checkpoint: Path, tmp_path: Path) -> None:
    """--dataset all finds each dataset's sub-folder; --classic scores the textbook method beside the model."""
    root = tmp_path / "sets"
    save_rgb(root / "Rain100L" / "input" / "rain-1.png", photo(7, 48, 48))
    save_rgb(root / "Rain100L" / "target" / "norain-1.png", photo(8, 48, 48))
    save_rgb(root / "LOL" / "low" / "1.png", photo(3, 32, 48) // 8)
    save_rgb(root / "LOL" / "high" / "1.png", photo(3, 32, 48))
    (root / "unrelated").mkdir()
    args = ["eval", "--dataset", "all", "--root", str(root), "-w", str(identity_checkpoint), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--classic", "--json", "--csv", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["label"] for s in report["sets"]] == ["Rain100L", "LOL"]
    rain, lol = report["sets"]
    assert rain["classic_method"].startswith("median") and lol["classic_method"].startswith("CLAHE")
    assert lol["classic_psnr"] > lol["input_psnr"] + 3  # CLAHE brightens the dark photo
    assert rain["psnr"] == pytest.approx(rain["input_psnr"])  # the identity model returns its input
    rows = read_csv(tmp_path / "r.csv")
    assert all(float(row["classic_psnr"]) > 0 for row in rows)
    table = runner.invoke(app, [*args, "--classic"])
    assert "classic" in table.output.split("conventions")[0] and "classic: median 5x5; CLAHE" in table.output
    plain = runner.invoke(app, args)
    assert "classic" not in plain.output  # only on request: non-local means takes seconds per image
    empty = runner.invoke(app, ["eval", "--dataset", "all", "--root", str(root / "unrelated"), "-w",
                                str(identity_checkpoint)])
    assert empty.exit_code == 2 and "sub-folders named" in empty.output


def test_whole_image_when_it_fits_tiles_when_not(identity_checkpoint: Path) -> None:
    from dfpir_cli.evaluate.benchmark import fits_whole

    checkpoint = load_checkpoint(identity_checkpoint)
    assert fits_whole(64, 64, checkpoint, torch.device("cpu"))
    assert not fits_whole(10**6, 10**6, checkpoint, torch.device("cpu"))


def test_nothing_scored_exits_1(identity_checkpoint: Path, tmp_path: Path) -> None:
    save_rgb(tmp_path / "A" / "x.png", photo(1, 32, 32))
    save_rgb(tmp_path / "B" / "x.png", photo(2, 48, 32))
    result = runner.invoke(app, ["eval", "-d", "paired", "--input-dir", str(tmp_path / "A"), "--target-dir",
                                 str(tmp_path / "B"), "-g", "rain", "-w", str(identity_checkpoint), "--device", "cpu"])
    assert result.exit_code == 1 and "size mismatch" in result.output


def test_precision_is_applied_and_reported(identity_checkpoint: Path, tmp_path: Path) -> None:
    make_sots(tmp_path / "SOTS")
    base = ["eval", "-d", "SOTS", "--root", str(tmp_path / "SOTS"), "-w", str(identity_checkpoint), "--device", "cpu",
            "--json", "--quiet"]
    reports = {}
    for precision in ("fp32", "bf16"):
        result = runner.invoke(app, [*base, "--precision", precision])
        assert result.exit_code == 0, result.output
        reports[precision] = json.loads(result.stdout)
        assert reports[precision]["precision"] == precision
    assert abs(reports["bf16"]["average"]["psnr"] - reports["fp32"]["average"]["psnr"]) < 0.05
    result = runner.invoke(app, [*base, "--precision", "fp8"])
    assert result.exit_code == 2 and "choose one of auto" in result.output


def test_datasets_folder_is_used_without_root(identity_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("DFPIR_DATA", str(data))
    save_rgb(data / "rain100l" / "input" / "rain-1.png", photo(7, 32, 32))  # folder names are not case-sensitive
    save_rgb(data / "rain100l" / "target" / "norain-1.png", photo(8, 32, 32))
    result = runner.invoke(app, ["eval", "--dataset", "Rain100L", "-w", str(identity_checkpoint), "--device", "cpu",
                                 "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)["sets"]
    assert entry["label"] == "Rain100L" and entry["images"] == 1

    missing = runner.invoke(app, ["eval", "--dataset", "lol", "-w", str(identity_checkpoint), "--device", "cpu"])
    text = " ".join(missing.output.split())
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert f"LOL is not in the datasets folder {data} ($DFPIR_DATA)" in text
    assert "https://daooshee.github.io/BMVC2018website/" in text
    assert f"files go to {data / 'LOL' / 'eval15' / 'low' / '1.png'}" in text and "or pass --root" in text


def test_suite_from_the_datasets_folder_names_what_is_missing(identity_checkpoint: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("DFPIR_DATA", str(data))
    make_sots(data / "SOTS")
    save_rgb(data / "Rain100L" / "input" / "rain-1.png", photo(7, 32, 32))
    save_rgb(data / "Rain100L" / "target" / "norain-1.png", photo(8, 32, 32))
    five = runner.invoke(app, ["eval", "--tasks", "5", "-w", str(identity_checkpoint), "--device", "cpu"])
    text = " ".join(five.output.split())
    assert five.exit_code == 2, five.output
    assert "Found: SOTS, Rain100L. Missing: CBSD68, GoPro, LOL." in text
    assert f"files go to {data / 'GoPro' / 'test'}" in text and "https://seungjunnah.github.io/Datasets/gopro" in text
    assert "SOTS: download" not in text  # only the missing sets are explained

    save_rgb(data / "CBSD68" / "a.png", photo(9, 32, 32))
    three = runner.invoke(app, ["eval", "--tasks", "3", "-w", str(identity_checkpoint), "--device", "cpu", "--json"])
    assert three.exit_code == 0, three.output
    assert [s["label"] for s in json.loads(three.stdout)["sets"]][:2] == ["SOTS", "Rain100L"]
