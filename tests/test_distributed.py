"""torchrun (2 CPU processes, gloo): data-parallel training equals one process with the same global batch; a
restore split between processes (or --shard jobs) restores every file once, as one process would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from test_train_data import write_image
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.train.trainer import Trainer
from dfpir_cli.weights.checkpoint import load_checkpoint

# Guarded: data-loading workers are spawned, and a spawned process imports the main script again.
LAUNCHER = "from dfpir_cli.cli import app\n\nif __name__ == '__main__':\n    app(prog_name='dfpir')\n"


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(5):
        write_image(photos / f"photo{i}.png", height=48, width=56, seed=i)
    launcher = tmp_path / "dfpir_launcher.py"
    launcher.write_text(LAUNCHER)
    common = ["train", "--degradations", "noise50,haze", "--clean-dir", str(photos), "--preset", "tiny",
              "--text-dim", "16", "--prompt-encoder", "random", "--device", "cpu", "--steps", "4", "--patch-size", "32",
              "--finetune-steps", "2", "--finetune-patch-size", "40", "--lr", "2e-3", "--val-every", "2",
              "--val-per-task", "1", "--val-size", "48", "--save-every", "3", "--seed", "3",
              "--precision", "fp32", "--synthesis", "classic"]  # exact arithmetic: bf16 rounding would hide what is compared

    run([sys.executable, str(launcher), *common, "--batch-size", "4", "--finetune-batch-size", "2", "--workers", "0",
         "-o", str(tmp_path / "one")], tmp_path)
    double = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  str(launcher), *common, "--batch-size", "2", "--finetune-batch-size", "1", "--workers", "1",
                  "-o", str(tmp_path / "two")], tmp_path)

    # Only process 0 talks: one plan, one summary.
    assert double.stdout.count("final:") == 1 and double.stdout.count("training data") == 1
    assert "2 processes" in double.stdout and "global batch 4" in double.stdout

    one, two = load_checkpoint(tmp_path / "one" / "final"), load_checkpoint(tmp_path / "two" / "final")
    assert one.metadata["world_size"] == 1 and two.metadata["world_size"] == 2  # ranks were checked equal at the end
    # Equal up to float summation order (gloo's all-reduce vs one batch), which Adam's normalised steps can
    # amplify for near-zero gradients: a small fraction of one lr step, against 6 steps of real movement.
    initial = Trainer(one.config, one.prompts.codes, seed=3).model.state_dict()
    moved = max(float((a - initial[name]).abs().max()) for name, a in one.model.state_dict().items())
    differ = 0.0
    for (name, a), b in zip(one.model.state_dict().items(), two.model.state_dict().values(), strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-3, atol=1e-4, err_msg=name)
        differ = max(differ, float((a - b).abs().max()))
    assert moved > 5e-3 and differ < moved / 100, (moved, differ)
    # Sharded validation over the two processes gives the same PSNR as one process.
    rows_one = [row.split(",") for row in (tmp_path / "one" / "val.csv").read_text().splitlines()[1:]]
    rows_two = [row.split(",") for row in (tmp_path / "two" / "val.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows_one] == [r[0] for r in rows_two] == ["2", "4", "6"]
    np.testing.assert_allclose(np.array([r[2:] for r in rows_two], float), np.array([r[2:] for r in rows_one], float),
                               atol=1e-3)


def test_two_process_restore_gives_the_single_process_outputs_once(tmp_path: Path, micro_checkpoint: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(5):
        write_image(photos / f"photo{i}.png", height=40 + 8 * i, width=48, seed=i)
    (photos / "broken.png").write_bytes(b"not an image")
    launcher = tmp_path / "dfpir_launcher.py"
    launcher.write_text(LAUNCHER)
    common = ["restore", str(photos), "-d", "hazy", "-w", str(micro_checkpoint), "--device", "cpu", "--json"]

    def restore(command: list[str], output: Path) -> dict:
        result = subprocess.run([*command, *common, "-o", str(output)], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
        assert result.returncode == 1, f"{result.stdout}\n{result.stderr}"  # 1: broken.png failed
        return json.loads(result.stdout)  # exactly one JSON document: only process 0 prints

    one = restore([sys.executable, str(launcher)], tmp_path / "one")
    two = restore([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   str(launcher)], tmp_path / "two")
    assert (one["processed"], one["failed"]) == (two["processed"], two["failed"]) == (5, 1)
    assert [f["source"] for f in one["files"]] == [f["source"] for f in two["files"]]  # merged in input order
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [f"photo{i}.png" for i in range(5)]
    for i in range(5):
        a = np.asarray(Image.open(tmp_path / "one" / f"photo{i}.png"))
        b = np.asarray(Image.open(tmp_path / "two" / f"photo{i}.png"))
        assert np.array_equal(a, b), i


def test_shards_split_the_files_exactly_once(tmp_path: Path, micro_checkpoint: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(5):
        write_image(photos / f"photo{i}.png", height=32, width=40, seed=i)
    runner = CliRunner()
    base = ["restore", str(photos), "-d", "hazy", "-w", str(micro_checkpoint), "--device", "cpu", "--json",
            "-o", str(tmp_path / "out")]
    shares = []
    for index in range(3):
        result = runner.invoke(app, [*base, "--shard", f"{index}/3"])
        assert result.exit_code == 0, result.output
        shares.append({Path(f["source"]).name for f in json.loads(result.stdout)["files"]})
    assert [len(share) for share in shares] == [2, 2, 1]
    assert set.union(*shares) == {f"photo{i}.png" for i in range(5)} and sum(map(len, shares)) == 5
    for bad in ("3/3", "1", "a/b", "-1/2"):
        result = runner.invoke(app, [*base, "--shard", bad])
        assert result.exit_code == 2 and "--shard" in result.output, bad


def test_two_process_eval_gathers_the_single_process_results(tmp_path: Path, micro_checkpoint: Path) -> None:
    clean = tmp_path / "CBSD68"
    for i in range(5):
        write_image(clean / f"img{i}.png", height=32, width=48, seed=i)
    launcher = tmp_path / "dfpir_launcher.py"
    launcher.write_text(LAUNCHER)
    common = ["eval", "-d", "cbsd68", "--root", str(clean), "--sigma", "25", "-w", str(micro_checkpoint), "--device",
              "cpu", "--precision", "fp32", "--json", "--csv"]

    def evaluate(command: list[str], csv: Path) -> tuple[dict, str]:
        result = subprocess.run([*command, *common, str(csv)], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout), csv.read_text()

    one, one_csv = evaluate([sys.executable, str(launcher)], tmp_path / "one.csv")
    two, two_csv = evaluate([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(launcher)], tmp_path / "two.csv")
    assert one["sets"][0]["images"] == two["sets"][0]["images"] == 5
    assert one["sets"] == two["sets"]  # the same noise per image, the same scores
    drop_seconds = [[row.split(",")[:9] for row in text.splitlines()] for text in (one_csv, two_csv)]
    assert drop_seconds[0] == drop_seconds[1]
