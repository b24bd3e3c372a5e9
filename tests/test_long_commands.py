"""Every command that can run long, run as users run it: the real CLI in a subprocess, with a deadline.

These are the tests that catch a hang (for example data-loading workers forked with a half-initialised
thread pool, which made `dfpir train` wait forever with OpenCV 5) instead of letting CI wait forever.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from cli_process import DFPIR, TORCHRUN, kill_group, run, start
from test_train_data import write_image

from dfpir_cli.weights.checkpoint import load_checkpoint

DEADLINE = 240  # seconds; each command finishes in well under a minute when nothing hangs

# Photo-sized images and the default 256 px validation crops: the parent process's validation uses OpenCV's
# thread pool before the workers start, which is what made forked workers hang (with --val-size 64 it did not).
TRAIN = ["train", "--tasks", "5", "--preset", "tiny", "--text-dim", "16", "--prompt-encoder", "random",
         "--device", "cpu", "--patch-size", "48", "--batch-size", "2", "--precision", "fp32",
         "--finetune-steps", "1", "--finetune-patch-size", "48", "--finetune-batch-size", "2",
         "--val-per-task", "1"]  # two phases: the data-loading workers start twice


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(4):
        write_image(folder / f"photo{i}.png", height=321, width=481, seed=i)
    return folder


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(checkpoint).model.state_dict()


def assert_same_weights(a: Path, b: Path) -> None:
    expected, actual = weights(a), weights(b)
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name


def test_train_with_the_default_workers_then_resume_with_two(tmp_path: Path, photos: Path) -> None:
    output = tmp_path / "run"
    first = run([*DFPIR, *TRAIN, "--clean-dir", photos, "--steps", "3", "--save-every", "3", "-o", output],
                tmp_path, DEADLINE)  # no --workers: the default, data-loading processes on any multi-core machine
    assert "final:" in first.stdout and (output / "final" / "model.safetensors").is_file()
    # More steps on the finished run: a new run in another folder, resumed from its own checkpoint.
    longer = tmp_path / "longer"
    command = [*DFPIR, *TRAIN, "--clean-dir", photos, "--steps", "5", "--save-every", "2", "--workers", "2",
               "-o", longer]
    stopped = start(command, tmp_path)
    deadline = time.monotonic() + DEADLINE
    while not (longer / "resume.pt").is_file():  # written after the step's checkpoint folder: a complete save
        assert stopped.poll() is None, stopped.communicate()
        assert time.monotonic() < deadline, "HANG: no step checkpoint within the deadline"
        time.sleep(0.2)
    kill_group(stopped)
    stopped.wait()
    resumed = run([*command, "--resume"], tmp_path, DEADLINE)
    assert "resuming at step" in resumed.stdout and "final:" in resumed.stdout
    assert load_checkpoint(longer / "final").metadata["steps"] == 6


def test_train_with_real_pairs_in_loader_workers(tmp_path: Path, photos: Path) -> None:
    pairs = tmp_path / "polyu"
    for i in range(3):  # PolyU's layout: the same name in real/ and mean/
        write_image(pairs / "real" / f"shot{i}.JPG", height=200, width=240, seed=i + 10)
        write_image(pairs / "mean" / f"shot{i}.JPG", height=200, width=240, seed=i)
    output = tmp_path / "run"
    result = run([*DFPIR, *TRAIN, "--clean-dir", photos, "--pairs", f"noise15={pairs}", "--pairs-repeat", "4",
                  "--steps", "3", "--workers", "2", "-o", output], tmp_path, DEADLINE)
    assert "real pairs" in result.stdout
    assert load_checkpoint(output / "final").prompts.names[0] == "noise15"


def test_train_a_prompts_own_weights_in_loader_workers(tmp_path: Path, photos: Path, micro_checkpoint: Path) -> None:
    """--own-weights through the real CLI: camnoise's own decoder trained on the micro checkpoint, the rest kept."""
    output = tmp_path / "own"
    result = run([*DFPIR, "train", "--init-weights", micro_checkpoint, "--degradations", "camnoise", "--own-weights",
                  "decoder", "--clean-dir", photos, "--device", "cpu", "--patch-size", "48", "--batch-size", "2",
                  "--precision", "fp32", "--finetune-steps", "0", "--val-per-task", "1", "--steps", "3",
                  "--workers", "2", "-o", output], tmp_path, DEADLINE)
    assert "--own-weights: only the prompt's own" in result.stdout and "final:" in result.stdout
    base, trained = load_checkpoint(micro_checkpoint), load_checkpoint(output / "final")
    assert trained.prompts.names == (*base.prompts.names, "camnoise")
    assert_same_weights(micro_checkpoint, output / "final")  # the shared network is the base's
    assert trained.weights_of("camnoise") is not None


def test_torchrun_two_processes_train_with_default_workers(tmp_path: Path, photos: Path) -> None:
    result = run([*TORCHRUN, "--nproc_per_node", "2", "-m", "dfpir_cli", *TRAIN, "--clean-dir", photos,
                  "--steps", "2", "--batch-size", "2", "-o", tmp_path / "run"], tmp_path, DEADLINE)
    assert "2 processes" in result.stdout and result.stdout.count("final:") == 1
    assert load_checkpoint(tmp_path / "run" / "final").metadata["world_size"] == 2


def test_a_killed_train_resumes_to_the_uninterrupted_result(tmp_path: Path, photos: Path) -> None:
    """SIGKILL (no handler runs, no state saved on the way out) while checkpoints are being written, twice."""
    common = [*DFPIR, *TRAIN, "--clean-dir", photos, "--steps", "9", "--save-every", "1", "--keep-last", "2",
              "--val-every", "4", "--workers", "0", "--seed", "5"]
    run([*common, "-o", tmp_path / "straight"], tmp_path, DEADLINE)

    broken = tmp_path / "broken"
    for kill_after, resume in ((3, False), (6, True)):
        process = start([*common, "-o", broken, *(["--resume"] if resume else [])], tmp_path)
        deadline = time.monotonic() + DEADLINE
        while not any(int(path.name.split("-")[1]) >= kill_after for path in (broken / "checkpoints").glob("step-*")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "HANG: no step checkpoint within the deadline"
            time.sleep(0.05)
        kill_group(process)  # SIGKILL, every step writes a checkpoint: most likely mid-write
        process.wait()
    finished = run([*common, "-o", broken, "--resume"], tmp_path, DEADLINE)
    assert "resuming at step" in finished.stdout
    assert_same_weights(tmp_path / "straight" / "final", broken / "final")
    assert (broken / "val.csv").read_text() == (tmp_path / "straight" / "val.csv").read_text()
    leftovers = [p.name for p in broken.rglob("*") if p.name.startswith(".") or p.name.endswith((".tmp", ".part"))]
    assert not leftovers


def test_restore_a_folder(tmp_path: Path, photos: Path, micro_checkpoint: Path) -> None:
    result = run([*DFPIR, "restore", photos, "-d", "rainy", "-w", micro_checkpoint, "-o", tmp_path / "out",
                  "--device", "cpu", "--tile", "128", "--json"], tmp_path, DEADLINE)
    summary = json.loads(result.stdout)
    assert summary["processed"] == 4 and summary["failed"] == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"photo{i}.png" for i in range(4)]


def test_restore_with_a_self_ensemble_in_tiles(tmp_path: Path, photos: Path, micro_checkpoint: Path) -> None:
    result = run([*DFPIR, "restore", photos / "photo0.png", "-d", "noise+haze", "-w", micro_checkpoint, "-o",
                  tmp_path / "out", "--device", "cpu", "--tile", "128", "--self-ensemble", "8", "--json"],
                 tmp_path, DEADLINE)
    summary = json.loads(result.stdout)
    assert summary["processed"] == 1 and summary["failed"] == 0 and summary["self_ensemble"] == 8
    single = run([*DFPIR, "restore", photos / "photo0.png", "-d", "noise+haze", "-w", micro_checkpoint, "-o",
                  tmp_path / "single", "--device", "cpu", "--tile", "128", "--json"], tmp_path, DEADLINE)
    assert json.loads(single.stdout)["processed"] == 1
    assert (tmp_path / "out" / "photo0.png").read_bytes() != (tmp_path / "single" / "photo0.png").read_bytes()


def test_eval_on_the_synthetic_benchmark(tmp_path: Path, micro_checkpoint: Path) -> None:
    result = run([*DFPIR, "eval", "--dataset", "synthetic", "--size", "48", "--degradation", "noise25",
                  "--degradation", "haze", "-w", micro_checkpoint, "--device", "cpu", "--json"],
                 tmp_path, DEADLINE)
    scores = json.loads(result.stdout)
    assert [s["degradation"] for s in scores["sets"]] == ["noise25", "haze"], result.stderr


def test_eval_with_a_self_ensemble(tmp_path: Path, micro_checkpoint: Path) -> None:
    common = [*DFPIR, "eval", "--dataset", "synthetic", "--size", "48", "--degradation", "noise25", "--degradation",
              "rain", "-w", micro_checkpoint, "--device", "cpu", "--precision", "fp32", "--json"]
    ensembled = json.loads(run([*common, "--self-ensemble", "8"], tmp_path, DEADLINE).stdout)
    single = json.loads(run(common, tmp_path, DEADLINE).stdout)
    assert ensembled["self_ensemble"] == 8
    assert [s["self_ensemble"] for s in ensembled["sets"]] == [8, 4]  # rain passes stop at four views
    assert [s["psnr"] for s in ensembled["sets"]] != [s["psnr"] for s in single["sets"]]


def test_train_a_detector_then_detect_and_restore_auto(tmp_path: Path, photos: Path, micro_checkpoint: Path) -> None:
    detector, rainy = tmp_path / "detector", tmp_path / "rainy"
    shutil.copytree(photos, rainy)  # stands in for real rainy photos: labelled samples go through the workers too
    trained = run([*DFPIR, "train-detector", "--clean-dir", photos, "--labelled", f"rain={rainy}",
                   "--labelled-share", "0.5", "--steps", "3", "--batch-size", "4", "--val-samples", "8", "-o",
                   detector, "--json"], tmp_path, DEADLINE)  # default workers
    report = json.loads(trained.stdout)
    assert report["steps"] == 3 and (detector / "model.safetensors").is_file()
    assert (report["labelled_train"], report["labelled_val"]) == (3, 1)
    detected = json.loads(run([*DFPIR, "detect", photos, "--detector", detector, "--json"], tmp_path,
                              DEADLINE).stdout)
    assert sum(detected["counts"].values()) == 4 and detected["failed"] == 0
    result = run([*DFPIR, "restore", photos, "-w", micro_checkpoint, "--detector", detector, "-o", tmp_path / "out",
                  "--device", "cpu", "--json"], tmp_path, DEADLINE)  # no --degradation: auto
    summary = json.loads(result.stdout)
    assert summary["processed"] + summary["clean"] == 4 and summary["failed"] == 0
    assert sum(summary["detected"].values()) == 4
