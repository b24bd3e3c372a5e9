"""The degradation detector: its decisions, `dfpir detect`, `restore --degradation auto` and chains, `eval -g auto`.

Most tests use detectors whose answer is fixed (a head with zero weights and chosen biases), so what auto mode
does with a decision is tested apart from how well a trained detector decides; test_realsets.py guards that.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import MICRO, make_prompts
from typer.testing import CliRunner

from dfpir_cli.base.imageio import read_image
from dfpir_cli.cli import app
from dfpir_cli.detect import (
    CHAIN,
    DEFAULT_DETECTOR,
    FAMILIES,
    PRESENT,
    AutoPolicy,
    Detector,
    DetectorConfig,
    DetectorNet,
    decide,
    known_families,
    noise_prompt,
    parse_chain,
    plan_prompts,
)
from dfpir_cli.errors import CheckpointError, InputError
from dfpir_cli.model import DFPIR
from dfpir_cli.restore.pipeline import Restorer
from dfpir_cli.train.detector import DetectorRecipe, LabelledPhotos, SyntheticSamples, make_sample, parse_label
from dfpir_cli.weights.checkpoint import save_checkpoint
from dfpir_cli.weights.prompts import FIVE_TASK, THREE_TASK
from dfpir_cli.weights.resolve import resolve_weights

runner = CliRunner()
SMALL = DetectorConfig(width=8, hidden=8, crops=2)


def fixed_detector(folder: Path, sigma: float = 25.0, **probabilities: float) -> Path:
    """A detector that answers ``probabilities`` (family -> p, others 0.001) and ``sigma`` for every photo."""
    net = DetectorNet(SMALL)
    last = net.head[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        logits = [math.log(p / (1 - p)) for p in (probabilities.get(family, 0.001) for family in FAMILIES)]
        last.bias.copy_(torch.tensor([*logits, math.log(sigma)]))
    Detector(net).save(folder)
    return folder


def write_photo(path: Path, seed: int = 0, size: tuple[int, int] = (40, 56)) -> Path:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), size[::-1], interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(path), base)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = DFPIR(MICRO).eval()
    folder = tmp_path_factory.mktemp("ckpt") / "micro"
    save_checkpoint(folder, model, make_prompts(MICRO.text_dim))
    return folder


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(3):
        write_photo(folder / f"p{seed}.png", seed)
    return folder


# --- decisions ---------------------------------------------------------------------------------------------------

def test_the_top_family_is_chosen_and_a_second_only_when_likely() -> None:
    assert decide({"noise": 0.9, "haze": 0.2}, 30).families == ("noise",)
    assert decide({"noise": 0.9, "haze": CHAIN}, 30).families == ("noise", "haze")  # restore order, not rank
    assert decide({"haze": 0.95, "noise": CHAIN - 0.01}, 30).families == ("haze",)
    two = decide({"lowlight": 0.8, "noise": 0.9, "rain": 0.75}, 40)
    assert two.families == ("noise", "lowlight") and two.label == "noise+lowlight" and two.noise_sigma == 40
    assert two.confidence == pytest.approx(0.8)


def test_nothing_likely_is_clean_with_its_probability() -> None:
    detection = decide({"noise": 0.1, "rain": 0.3}, 20)
    assert detection.families == () and detection.label == "clean" and detection.noise_sigma is None
    assert detection.probabilities["clean"] == pytest.approx(0.9 * 0.7)
    assert detection.confidence == pytest.approx(0.63) and detection.low_confidence
    assert detection.ranked()[0] == ("clean", pytest.approx(0.63))
    assert decide({"noise": 0.1, "rain": PRESENT - 0.01}, 20).label == "clean"


def test_a_family_the_checkpoint_is_unsure_of_is_withheld_and_flagged() -> None:
    policy = AutoPolicy({"blur": 0.9, "default": 0.6})
    blurred = decide({"blur": 0.85, "noise": 0.1}, 20, policy)
    assert blurred.label == "clean" and blurred.withheld == ("blur",) and blurred.low_confidence
    assert blurred.to_json()["withheld"] == ["blur"]
    assert decide({"blur": 0.95, "noise": 0.1}, 20, policy).label == "blur"
    # the next family the checkpoint is sure of is restored; the unsure one is still withheld
    both = decide({"blur": 0.85, "haze": 0.8}, 20, policy)
    assert both.label == "haze" and both.withheld == ("blur",)
    assert decide({"haze": 0.55}, 20, policy).withheld == ("haze",)  # "default" for the families not named
    assert decide({"haze": 0.55}, 20).label == "haze" and not decide({"haze": 0.55}, 20).withheld  # no policy
    assert AutoPolicy({"blur": 0.2}).needs("blur") == PRESENT  # a checkpoint's: never below "likely"


def test_a_detectors_calibration_may_ask_for_less_than_present_and_a_checkpoint_still_for_more() -> None:
    detector = AutoPolicy.of({"thresholds": {"rain": 0.48, "haze": 0.85}}, "thresholds", "detector")
    assert detector.calibrates and detector.needs("rain") == 0.48 and detector.needs("noise") == PRESENT
    combined = AutoPolicy({"blur": 0.9}).stricter(detector)
    assert (combined.needs("rain"), combined.needs("haze"), combined.needs("blur"), combined.needs("noise")) == (
        0.48, 0.85, 0.9, PRESENT)
    assert AutoPolicy({"rain": 0.7}).stricter(detector).needs("rain") == 0.7  # the checkpoint asks for more
    assert AutoPolicy({"default": 0.6}).stricter(detector).needs("rain") == 0.6
    assert decide({"rain": 0.49, "noise": 0.1}, 20, combined).label == "rain"
    assert decide({"rain": 0.47, "noise": 0.1}, 20, combined).label == "clean"
    assert decide({"rain": 0.49}, 20).label == "clean"  # without the calibration: PRESENT


@pytest.mark.parametrize("given", [{"snow": 0.5}, {"blur": 1.5}, {"blur": "high"}, {"blur": True}, ["blur"]])
def test_bad_auto_thresholds_are_refused(given) -> None:
    with pytest.raises(CheckpointError, match="auto_thresholds"):
        AutoPolicy.of({"auto_thresholds": given})


def test_detect_and_auto_follow_the_checkpoints_thresholds(tmp_path: Path, photos: Path) -> None:
    """A checkpoint asking for more certainty than any photo gives leaves every photo alone, flagged."""
    torch.manual_seed(0)
    strict = save_checkpoint(tmp_path / "strict", DFPIR(MICRO).eval(), make_prompts(MICRO.text_dim),
                             {"auto_thresholds": {"default": 1.0}})
    result = runner.invoke(app, ["detect", str(photos), "--weights", str(strict), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["files"]
    assert all(row["detected"] == "clean" for row in rows)
    assert any(row["withheld"] for row in rows) and all(row["low_confidence"] for row in rows if row["withheld"])
    restored = runner.invoke(app, ["restore", str(photos), "-o", str(tmp_path / "out"), "-w", str(strict), "--json"])
    assert restored.exit_code == 0, restored.output
    summary = json.loads(restored.stdout)
    assert summary["processed"] == 0 and summary["clean"] == len(rows)


def test_the_noise_prompt_follows_the_estimated_level() -> None:
    assert [noise_prompt(sigma, FIVE_TASK) for sigma in (8, 18, 24, 34, 40, 90)] == [
        "noise15", "noise15", "noise25", "noise25", "noise50", "noise50"]
    assert noise_prompt(None, FIVE_TASK) == "noise25"
    # a checkpoint with a camera-noise prompt gets it for noise as light as a camera's (PolyU: 2.6-6 estimated)
    with_camera = (*FIVE_TASK, "camnoise")
    assert [noise_prompt(sigma, with_camera) for sigma in (2.6, 6, 8, 9.5, 13.7, 24, 40)] == [
        "camnoise", "camnoise", "camnoise", "noise15", "noise15", "noise25", "noise50"]
    assert noise_prompt(3, ("camnoise",)) == noise_prompt(30, ("camnoise",)) == "camnoise"
    with pytest.raises(InputError, match="no noise prompt"):
        noise_prompt(20, ("haze", "rain"))


def test_plans_use_only_what_the_checkpoint_knows() -> None:
    assert known_families(THREE_TASK) == ("noise", "rain", "haze")
    detection = decide({"noise": 0.9, "haze": 0.8}, 48)
    assert plan_prompts(detection, FIVE_TASK) == ("noise50", "haze")
    assert plan_prompts(decide({}, 0), FIVE_TASK) == ()


def test_chains_are_parsed_in_the_order_written() -> None:
    assert parse_chain("haze+noise") == ("haze", "noise25")
    assert parse_chain(" dark + sigma15 ") == ("lowlight", "noise15")
    for bad, message in (("haze+", "join names"), ("haze+foggy", "twice")):
        with pytest.raises(InputError, match=message):
            parse_chain(bad)


def test_training_samples_carry_their_labels() -> None:
    photo = np.random.default_rng(0).integers(0, 256, (120, 150, 3), dtype=np.uint8)
    recipe = DetectorRecipe()
    seen = set()
    for index in range(40):
        crops, thumb, target, sigma = make_sample(photo, recipe, SMALL, np.random.default_rng([0, index]))
        assert crops.shape == (SMALL.crops, SMALL.crop, SMALL.crop, 3) and thumb.shape == (64, 64, 3)
        assert (sigma > 0) == bool(target[FAMILIES.index("noise")])
        seen.add(tuple(target))
    assert len(seen) >= 5  # clean, single families and noisy pairs all occur


def test_camera_noise_and_photographed_rain_samples() -> None:
    """With the shares at 1, every realistic noise sample is a camera's (light: its sigma, the target, is small) and
    every realistic rain sample photographed rain; at 0 the stream is the one earlier recipes drew."""
    photo = np.random.default_rng(2).integers(0, 256, (120, 150, 3), dtype=np.uint8)
    photo = cv2.GaussianBlur(photo, (0, 0), 3)  # a photo, not a noise field (a JPEG of noise errs by far more)
    camera = DetectorRecipe(realistic_share=1.0, camera_share=1.0, photographed_share=1.0, mixed_share=0.0)
    sigmas = [make_sample(photo, camera, SMALL, np.random.default_rng([0, index]))[3] for index in range(60)]
    noisy = [sigma for sigma in sigmas if sigma > 0]
    assert noisy and max(noisy) <= 10.0  # a camera's noise, not sigma 12-55
    white = DetectorRecipe(realistic_share=1.0, mixed_share=0.0)
    assert min(sigma for index in range(60)
               if (sigma := make_sample(photo, white, SMALL, np.random.default_rng([0, index]))[3]) > 0) >= 12.0
    for index in range(20):
        before = make_sample(photo, DetectorRecipe(), SMALL, np.random.default_rng([0, index]))
        after = make_sample(photo, DetectorRecipe(camera_share=0.0, photographed_share=0.0), SMALL,
                            np.random.default_rng([0, index]))
        assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_region_sets_the_scale_the_thumbnail_sees() -> None:
    """The thumbnail is the sample's region shrunk: a larger region shows more of the photo in it."""
    photo = np.zeros((400, 400, 3), dtype=np.uint8)
    photo[::8] = 255  # a stripe every 8 rows: a 64 px thumbnail of a 320 px region squeezes them 5x
    plain = dict(clean_share=1.0, jpeg_share=0.0)
    def thumb(region: int) -> np.ndarray:
        return make_sample(photo, DetectorRecipe(region=region, **plain), SMALL, np.random.default_rng(3))[1]
    assert thumb(64).std() > 2 * thumb(320).std()  # stripes kept at 1:1, averaged away when shrunk 5x


def test_only_the_named_families_are_made_faint() -> None:
    photo = np.random.default_rng(1).integers(0, 256, (120, 150, 3), dtype=np.uint8)
    rain_only = DetectorRecipe(faint_share=1.0, faint_families=("rain",), jpeg_share=0.0)
    index = next(i for i in range(200) if make_sample(photo, rain_only, SMALL, np.random.default_rng([0, i]))[2]
                 .tolist() == [float(family == "haze") for family in FAMILIES])  # a sample that is haze alone
    def sample(recipe: DetectorRecipe) -> np.ndarray:
        return make_sample(photo, recipe, SMALL, np.random.default_rng([0, index]))[1]
    assert np.array_equal(sample(rain_only), sample(DetectorRecipe(faint_share=0.0, faint_families=("rain",),
                                                                   jpeg_share=0.0)))
    assert not np.array_equal(sample(rain_only), sample(DetectorRecipe(faint_share=1.0, faint_families=("haze",),
                                                                       jpeg_share=0.0)))


def test_train_detector_refuses_a_family_it_cannot_make_faint(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train-detector", "--clean-dir", str(tmp_path), "--output", str(tmp_path / "d"),
                                 "--faint-families", "rain,snow"])
    assert result.exit_code == 2 and "snow cannot be made faint" in result.output


def test_labelled_photos_are_trained_on_as_they_are_with_their_label() -> None:
    grey = np.full((90, 110, 3), 77, np.uint8)  # any crop of it is this colour, if nothing was synthesised
    recipe = DetectorRecipe(labelled_share=1.0, jpeg_share=0.0)
    samples = SyntheticSamples([grey], 6, recipe, SMALL, stream=0, labelled=[LabelledPhotos("noise+rain", [grey])])
    for index in range(len(samples)):
        crops, thumb, target, sigma = samples[index]
        assert torch.all(crops == 77 / 255) and torch.allclose(thumb, torch.tensor(77 / 255), atol=1e-6)
        assert target.tolist() == [float(family in ("noise", "rain")) for family in FAMILIES]
        assert sigma == 0  # a real photo's noise level is not known: no sigma loss


def test_without_labelled_photos_the_synthetic_stream_is_unchanged() -> None:
    photos = [np.random.default_rng(seed).integers(0, 256, (100, 120, 3), dtype=np.uint8) for seed in range(3)]
    for labelled in ([], [LabelledPhotos("rain", photos[:1])]):  # a share of 0 takes none and draws nothing
        samples = SyntheticSamples(photos, 6, DetectorRecipe(labelled_share=0.0), SMALL, stream=0, labelled=labelled)
        for index in range(6):
            rng = np.random.default_rng([0, 0, index])  # how samples were drawn before labelled photos existed
            expected = make_sample(photos[int(rng.integers(3))], DetectorRecipe(), SMALL, rng)
            assert np.array_equal(samples[index][2].numpy(), expected[2])
            assert np.allclose(samples[index][1].permute(1, 2, 0).numpy(), expected[1])


def test_labels_are_checked_and_put_in_restore_order() -> None:
    assert parse_label("rain+noise", FAMILIES) == "noise+rain"
    assert parse_label("clean", FAMILIES) == "clean"
    for bad in ("snow", "rain+rain", "clean+rain", "rain+haze+noise"):
        with pytest.raises(InputError, match="use clean"):
            parse_label(bad, FAMILIES)


def test_train_detector_learns_from_labelled_folders_and_scores_them(tmp_path: Path, photos: Path) -> None:
    rainy, clean = tmp_path / "rainy", tmp_path / "clean"
    for folder, offset in ((rainy, 10), (clean, 20)):
        folder.mkdir()
        for seed in range(3):
            write_photo(folder / f"{seed}.png", offset + seed, size=(80, 96))
    result = runner.invoke(app, ["train-detector", "--clean-dir", str(photos), "--labelled", f"rain={rainy}",
                                 "--labelled", f"clean={clean}", "--steps", "2", "--batch-size", "4",
                                 "--val-samples", "4", "--workers", "0", "-o", str(tmp_path / "d"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["val_per_label"]
    assert rows["rain (real)"][1] == 1 and rows["clean (real)"][1] == 1  # every 20th photo held out: the first
    assert (report["labelled_train"], report["labelled_val"]) == (4, 2)
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["metadata"]["labelled_dirs"] == {f"rain={rainy}": 3, f"clean={clean}": 3}


@pytest.mark.parametrize(("options", "message"), [
    (["rain"], "write LABEL=FOLDER"), (["snow=x"], "use clean"), (["rain=/no/such/folder"], "no such folder"),
    (["rain=PHOTOS/sub"], "overlaps --clean-dir"), (["rain=ELSE", "rain=ELSE"], "given twice")])
def test_bad_labelled_folders_are_usage_errors(tmp_path: Path, photos: Path, options: list[str], message: str) -> None:
    (tmp_path / "else").mkdir()
    args = [arg for option in options
            for arg in ("--labelled", option.replace("PHOTOS", str(photos)).replace("ELSE", str(tmp_path / "else")))]
    result = runner.invoke(app, ["train-detector", "--clean-dir", str(photos), *args, "-o", str(tmp_path / "d")])
    assert result.exit_code == 2 and message in result.output


# --- the detector folder -----------------------------------------------------------------------------------------

def test_a_detector_round_trips_and_refuses_other_folders(tmp_path: Path, checkpoint: Path) -> None:
    folder = fixed_detector(tmp_path / "det", haze=0.9)
    detection = Detector.load(folder).detect(np.full((50, 70, 3), 0.5, np.float32))
    assert detection.label == "haze" and detection.probabilities["haze"] == pytest.approx(0.9, abs=1e-3)
    with pytest.raises(CheckpointError, match="not a detector config"):
        Detector.load(checkpoint)
    with pytest.raises(CheckpointError, match="is not a detector"):
        Detector.load(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    for field, value, message in (("width", "32", "width must be a positive whole number"),
                                  ("crops", True, "crops must be a positive whole number"),
                                  ("families", ["noise", "snow"], "families must be a list of distinct names")):
        (folder / "config.json").write_text(json.dumps({**config, "config": {**config["config"], field: value}}))
        with pytest.raises(CheckpointError, match=message):  # a hand-edited config: its field named, no traceback
            Detector.load(folder)


def test_a_detector_records_the_sha256_of_its_weights(tmp_path: Path) -> None:
    folder = fixed_detector(tmp_path / "det", haze=0.9)
    weights = folder / "model.safetensors"
    assert json.loads((folder / "config.json").read_text())["weights_sha256"] == digest(weights)
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight: a valid file that only the hash tells apart
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256 recorded"):
        Detector.load(folder)


def test_the_shipped_detector_loads_and_is_small() -> None:
    detector = Detector.load()
    assert sum(path.stat().st_size for path in DEFAULT_DETECTOR.iterdir()) < 1_000_000
    assert detector.config.families == FAMILIES
    assert detector.detect(np.zeros((10, 10, 3), np.float32)).label  # a tiny photo is padded, not refused


def test_a_photo_and_its_mirror_image_are_scored_alike() -> None:
    detector = Detector.load()
    rng = np.random.default_rng(3)
    for shape in ((321, 481, 3), (50, 70, 3)):
        photo = rng.random(shape, dtype=np.float32) * np.linspace(0, 1, shape[1], dtype=np.float32)[:, None]
        probabilities, sigma = detector.scores([photo])
        mirrored, mirrored_sigma = detector.scores([np.ascontiguousarray(photo[:, ::-1])])
        torch.testing.assert_close(probabilities, mirrored, atol=0.02, rtol=0)  # a middle crop moves a pixel
        torch.testing.assert_close(sigma, mirrored_sigma, atol=0.05, rtol=0.03)


# --- dfpir detect ------------------------------------------------------------------------------------------------

def test_detect_lists_each_photo(tmp_path: Path, photos: Path) -> None:
    detector = fixed_detector(tmp_path / "det", sigma=45, noise=0.95, lowlight=0.8)
    (photos / "broken.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["detect", str(photos), "--detector", str(detector), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["counts"] == {"noise+lowlight": 3} and report["failed"] == 1
    first = next(row for row in report["files"] if row["source"].endswith("p0.png"))
    assert first["detected"] == "noise+lowlight" and first["noise_sigma"] == pytest.approx(45, abs=0.5)
    assert list(first["probabilities"])[0] == "noise"
    table = runner.invoke(app, ["detect", str(photos / "p1.png"), "--detector", str(detector)])
    assert table.exit_code == 0 and "noise" in table.stdout and "95%" in table.stdout
    nothing = runner.invoke(app, ["detect", str(tmp_path / "missing"), "--detector", str(detector)])
    assert nothing.exit_code == 2 and "nothing to detect" in nothing.output


# --- restore --degradation auto and chains -------------------------------------------------------------------------

def restore(*args: object) -> tuple[int, dict]:
    result = runner.invoke(app, ["restore", *map(str, args), "--json", "--precision", "fp32"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def test_auto_copies_clean_photos_unchanged(tmp_path: Path, photos: Path, checkpoint: Path) -> None:
    detector = fixed_detector(tmp_path / "det")
    code, summary = restore(photos, "-w", checkpoint, "--detector", detector, "-o", tmp_path / "out")
    assert code == 0 and summary["clean"] == 3 and summary["processed"] == 0
    assert summary["detected"] == {"clean": 3}
    for source in photos.iterdir():
        assert digest(tmp_path / "out" / source.name) == digest(source)
    entry = summary["files"][0]
    assert entry["status"] == "clean" and entry["detection"]["detected"] == "clean"


def test_auto_restores_with_the_detected_prompt(tmp_path: Path, photos: Path, checkpoint: Path) -> None:
    detector = fixed_detector(tmp_path / "det", haze=0.97)
    code, auto = restore(photos, "-w", checkpoint, "--detector", detector, "-d", "auto", "-o", tmp_path / "auto")
    assert code == 0 and auto["processed"] == 3 and auto["detected"] == {"haze": 3} and not auto["low_confidence"]
    restore(photos, "-w", checkpoint, "-d", "haze", "-o", tmp_path / "oracle")
    for source in photos.iterdir():
        assert digest(tmp_path / "auto" / source.name) == digest(tmp_path / "oracle" / source.name)


def test_auto_flags_low_confidence(tmp_path: Path, photos: Path, checkpoint: Path) -> None:
    detector = fixed_detector(tmp_path / "det", rain=0.6)
    _, summary = restore(photos, "-w", checkpoint, "--detector", detector, "-o", tmp_path / "out")
    assert summary["detected"] == {"rain": 3} and len(summary["low_confidence"]) == 3
    table = runner.invoke(app, ["restore", str(photos), "-w", str(checkpoint), "--detector", str(detector),
                                "-o", str(tmp_path / "out"), "--overwrite", "--precision", "fp32"])
    assert table.exit_code == 0 and "low confidence (3)" in table.stdout


def test_a_chain_is_its_passes_in_order(tmp_path: Path, checkpoint: Path) -> None:
    photo = write_photo(tmp_path / "in.png")
    _, chained = restore(photo, "-w", checkpoint, "-d", "noise50+haze", "-o", tmp_path / "chain")
    assert chained["files"][0]["degradation"] == "noise50+haze" and chained["prompt"] == "noise50 then haze"
    loaded = resolve_weights(str(checkpoint), "cpu")
    pixels = read_image(photo).pixels
    restorer = Restorer(loaded, loaded.prompts.code("noise50"), torch.device("cpu"))
    first = restorer.restore(pixels)
    restorer.code = loaded.prompts.code("haze").reshape(1, -1).float()
    both = restorer.restore(pixels, names=("noise50", "haze"))
    assert torch.equal(both, restorer.restore(first))  # the second pass reads the first's float output
    written = read_image(tmp_path / "chain" / "in.png").pixels
    assert (written - both).abs().max() <= 0.5 / 255 + 1e-6
    detector = fixed_detector(tmp_path / "det", sigma=50, noise=0.9, haze=0.85)
    _, auto = restore(photo, "-w", checkpoint, "--detector", detector, "-o", tmp_path / "auto")
    assert auto["detected"] == {"noise50+haze": 1}
    assert digest(tmp_path / "auto" / "in.png") == digest(tmp_path / "chain" / "in.png")


@pytest.mark.parametrize(("args", "message"), [
    (["-d", "auto", "--prompt", "rain streaks"], "one or the other"),
    (["-d", "haze+sharpen"], "unknown degradation"),
])
def test_bad_auto_and_chain_options_are_usage_errors(tmp_path: Path, photos: Path, checkpoint: Path,
                                                     args: list[str], message: str) -> None:
    result = runner.invoke(app, ["restore", str(photos), "-w", str(checkpoint), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_a_chain_the_checkpoint_cannot_do_is_refused(tmp_path: Path, photos: Path) -> None:
    torch.manual_seed(0)
    folder = tmp_path / "three"
    save_checkpoint(folder, DFPIR(MICRO), make_prompts(MICRO.text_dim, THREE_TASK))
    result = runner.invoke(app, ["restore", str(photos), "-w", str(folder), "-d", "noise+lowlight",
                                 "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "lowlight" in result.output


# --- eval -g auto --------------------------------------------------------------------------------------------------

def test_eval_scores_detected_prompts_beside_the_oracle(tmp_path: Path, checkpoint: Path) -> None:
    detector = fixed_detector(tmp_path / "det", haze=0.95)
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(2):
        write_photo(images / f"{seed}.png", seed)
    result = runner.invoke(app, ["eval", "--dataset", "synthetic", "-w", str(checkpoint), "--images", str(images),
                                 "--size", "32", "-g", "haze", "-g", "rain", "-g", "auto", "--detector",
                                 str(detector), "--json", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    sets = {entry["degradation"]: entry for entry in json.loads(result.stdout)["sets"]}
    assert sets["haze"]["detected"] == {"haze": 2} and sets["haze"]["auto_psnr"] == sets["haze"]["psnr"]
    assert sets["rain"]["detected"] == {"haze": 2} and sets["rain"]["auto_psnr"] != sets["rain"]["psnr"]
