"""`dfpir train` end to end on real files: a run, its checkpoint, its logs, and the bad-input messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from test_train_data import write_image
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.weights.checkpoint import PromptBank, load_checkpoint, save_checkpoint

runner = CliRunner()
MICRO_ARGS = ["--preset", "tiny", "--text-dim", "16", "--prompt-encoder", "random", "--workers", "0",
              "--val-per-task", "1", "--val-size", "48"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(4):
        write_image(folder / f"photo{i}.png", height=48, width=56, seed=i)
    write_image(folder / "tiny.jpg", height=24, width=28, seed=9)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


def test_train_writes_a_usable_checkpoint_and_logs(tmp_path: Path, photos: Path) -> None:
    output = tmp_path / "run"
    args = ["train", "--degradations", "noisy,rain", "--clean-dir", str(photos), *MICRO_ARGS, "--steps", "4",
            "--finetune-steps", "2", "--patch-size", "32", "--finetune-patch-size", "40", "--batch-size", "2",
            "--finetune-batch-size", "2", "--val-every", "2", "--save-every", "2", "--keep-last", "1", "--precision", "bf16",
            "-o", str(output)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 unreadable image(s) skipped" in result.output and "broken.png" in result.output
    assert "reflect-padded" in result.output and "tiny.jpg" in result.output
    assert f"final: {output / 'final'}" in result.output
    assert "frozen: the DGM's linear layers" in result.output

    checkpoint = load_checkpoint(output / "final")
    assert checkpoint.prompts.names == ("noise25", "rain") and checkpoint.prompts.encoder == "random"
    assert checkpoint.config.text_dim == 16 and checkpoint.config.dim == 8
    assert checkpoint.metadata["preset"] == "tiny" and checkpoint.metadata["steps"] == 6
    assert checkpoint.metadata["recipe"]["phases"][1]["patch_size"] == 40
    assert checkpoint.metadata["recipe"]["precision"] == "bf16"  # CPU autocast, forced
    assert checkpoint.metadata["recipe"]["synthesis"] == "realistic" and checkpoint.metadata["recipe"]["identity"] == 0
    assert load_checkpoint(output / "best").metadata["val_psnr_mean"] > 10
    rows = (output / "val.csv").read_text().splitlines()
    assert rows[0] == "step,phase,mean_psnr,noise25,rain" and [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]
    assert [p.name for p in (output / "checkpoints").iterdir()] == ["step-0000006"]

    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 2 and "already finished at step 6" in again.output
    identity = runner.invoke(app, [*args, "--resume", "--identity", "0.2"])
    assert identity.exit_code == 2 and "identity: run had 0.0, now 0.2" in identity.output
    changed = runner.invoke(app, [*args, "--resume", "--lr", "0.001"])
    assert changed.exit_code == 2 and "phases[0].lr: run had 0.0001, now 0.001" in changed.output
    fresh = runner.invoke(app, args)
    assert fresh.exit_code == 2 and "--resume" in fresh.output


def test_train_on_reference_layouts_under_a_data_root(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(3):
        write_image(root / "Denoise" / f"{i:04d}.png", seed=i)
        write_image(root / "Derain" / "rainy" / f"rain-{i + 1}.png", seed=i + 10)
        write_image(root / "Derain" / "gt" / f"norain-{i + 1}.png", seed=i)
    for i in range(2):  # real pairs for noise15 beside the synthesised noise
        write_image(root / "real_noise" / "input" / f"{i}.png", seed=i + 20)
        write_image(root / "real_noise" / "target" / f"{i}.png", seed=i)
    result = runner.invoke(app, ["train", "--degradations", "noise15,noise50,rain", "--data-root", str(root),
                                 "--pairs", f"noise15={root / 'real_noise'}", "--pairs-repeat", "2",
                                 *MICRO_ARGS, "--steps", "2", "--finetune-steps", "0", "--patch-size", "32",
                                 "--batch-size", "3", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "val.csv").read_text().startswith("step,phase,mean_psnr,noise15,noise50,rain\n")
    checkpoint = load_checkpoint(tmp_path / "run" / "final")
    assert checkpoint.prompts.names == ("noise15", "noise50", "rain")
    assert checkpoint.metadata["recipe"]["phases"][0]["batch_size"] == 3


def test_missing_clip_weights_suggest_random_codes(tmp_path: Path, photos: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFPIR_CLIP_WEIGHTS", str(tmp_path / "no-such-clip.safetensors"))
    result = runner.invoke(app, ["train", "--degradations", "rain", "--clean-dir", str(photos), "--preset", "tiny",
                                 "--steps", "1", "--finetune-steps", "0", "--workers", "0", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "CLIP" in result.output and "--prompt-encoder random" in result.output
    assert not (tmp_path / "r" / "resume.pt").exists()


def test_bad_inputs_get_clear_messages(tmp_path: Path, photos: Path) -> None:
    root = tmp_path / "data"
    for i in (1, 2):
        write_image(root / "derain" / "rainy" / f"rain-{i}.png", seed=i)
    write_image(root / "derain" / "gt" / "norain-1.png")
    base = ["train", *MICRO_ARGS, "--steps", "1", "--finetune-steps", "0", "-o", str(tmp_path / "out")]

    missing = runner.invoke(app, [*base, "--degradations", "rain", "--data-root", str(root)])
    assert missing.exit_code == 2 and "no clean counterpart" in missing.output and "rain-2.png" in missing.output

    no_folder = runner.invoke(app, [*base, "--tasks", "3", "--data-root", str(root)])
    assert no_folder.exit_code == 2 and "no training folder for noise" in no_folder.output

    odd_patch = runner.invoke(app, [*base, "--degradations", "rain", "--clean-dir", str(photos), "--patch-size", "36"])
    assert odd_patch.exit_code == 2 and "not a positive multiple of 8" in odd_patch.output

    unknown = runner.invoke(app, [*base, "--degradations", "snow", "--clean-dir", str(photos)])
    assert unknown.exit_code == 2 and "unknown degradation 'snow'" in unknown.output

    no_data = runner.invoke(app, [*base, "--degradations", "rain"])
    assert no_data.exit_code == 2 and "--clean-dir" in no_data.output

    tasks = runner.invoke(app, [*base, "--tasks", "4", "--clean-dir", str(photos)])
    assert tasks.exit_code == 2 and "--tasks must be 3" in tasks.output

    pairs = runner.invoke(app, [*base, "--degradations", "rain", "--clean-dir", str(photos), "--pairs", "rain"])
    assert pairs.exit_code == 2 and "write NAME=DIR" in pairs.output

    loss = runner.invoke(app, [*base, "--degradations", "rain", "--clean-dir", str(photos), "--loss", "l3"])
    assert loss.exit_code == 2 and "unknown loss 'l3': choose one of l1, mse" in loss.output
    for name, text in (("list.json", "[1, 2]"), ("broken.json", "{\"dim\": 8,")):  # a preset file that is no config
        (tmp_path / name).write_text(text)
        preset = runner.invoke(app, [*base, "--degradations", "rain", "--clean-dir", str(photos), "--preset",
                                     str(tmp_path / name)])
        assert preset.exit_code == 2 and "not a network config" in preset.output, preset.output
    assert not (tmp_path / "out").exists()


def test_help_is_the_manual() -> None:
    result = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--data-root", "--clean-dir", "--resume", "--precision", "--prompt-encoder", "--keep-last",
                   "--grad-clip", "--finetune-lr", "torchrun", "--synthesis", "--identity"):
        assert option in result.output


def test_init_weights_fine_tunes_a_checkpoint_with_its_own_codes(tmp_path: Path, photos: Path) -> None:
    common = ["--clean-dir", str(photos), "--workers", "0", "--val-per-task", "1", "--val-size", "48",
              "--finetune-steps", "0", "--patch-size", "32", "--batch-size", "2"]
    base = runner.invoke(app, ["train", "--degradations", "noisy,rain", *MICRO_ARGS[:-6], *common, "--steps", "2",
                               "-o", str(tmp_path / "base")])
    assert base.exit_code == 0, base.output
    start = load_checkpoint(tmp_path / "base" / "final")

    # lr 1e-12: Adam moves each weight by about 1e-12, so the result shows the starting point
    tuned = runner.invoke(app, ["train", "--degradations", "rain", "--init-weights", str(tmp_path / "base" / "final"),
                                *common, "--steps", "1", "--lr", "1e-12", "--min-lr", "1e-13", "-o", str(tmp_path / "ft")])
    assert tuned.exit_code == 0, tuned.output
    result = load_checkpoint(tmp_path / "ft" / "final")
    assert result.config == start.config and result.metadata["preset"] == "tiny"
    assert result.prompts.names == ("rain",) and result.prompts.encoder == "random"
    assert result.prompts.codes[0].equal(start.prompts.code("rain"))
    assert result.metadata["recipe"]["init_weights"] == str(tmp_path / "base" / "final")
    before, after = start.model.state_dict(), result.model.state_dict()
    assert max((before[k] - after[k]).abs().max().item() for k in before) < 1e-6

    # a degradation the checkpoint does not know gets a new random code (its codes are random ones), the others
    # keep theirs: camera noise learnt under its own prompt beside the Gaussian noise one
    added = runner.invoke(app, ["train", "--degradations", "noise25,camnoise", "--init-weights",
                                str(tmp_path / "base" / "final"), *common, "--steps", "1", "-o", str(tmp_path / "x")])
    assert added.exit_code == 0, added.output
    grown = load_checkpoint(tmp_path / "x" / "final")
    assert grown.prompts.names == ("noise25", "camnoise") and grown.prompts.encoder == "random"
    assert grown.prompts.codes[0].equal(start.prompts.code("noise25"))
    assert not any(grown.prompts.codes[1].equal(code) for code in start.prompts.codes)
    assert grown.prompts.texts[1] == "Camera noise of a real photo"
    # from a checkpoint that kept only some of its codes (ft: rain alone), the new code repeats none either
    regrown = runner.invoke(app, ["train", "--degradations", "rain,camnoise", "--init-weights", str(tmp_path / "ft" / "final"),
                                  *common, "--steps", "1", "-o", str(tmp_path / "x3")])
    assert regrown.exit_code == 0, regrown.output
    codes = load_checkpoint(tmp_path / "x3" / "final").prompts.codes
    assert codes[0].equal(start.prompts.code("rain")) and not any(codes[1].equal(code) for code in start.prompts.codes)
    # a prompt that runs with its own weights (the default model's camnoise: noise25's code and its own decoder):
    # training does not carry them, so it learns a new code on the shared network, and the run says so
    bank = start.prompts
    own_bank = PromptBank((*bank.names, "camnoise"), (*bank.texts, "Camera noise of a real photo"),
                          torch.cat([bank.codes, bank.code("noise25")[None]]), "random")
    output = start.model.output.weight.detach() + 1
    save_checkpoint(tmp_path / "own", start.model, own_bank, prompt_weights={"camnoise": {"output.weight": output}})
    carried = runner.invoke(app, ["train", "--degradations", "noise25,camnoise", "--init-weights", str(tmp_path / "own"),
                                  *common, "--steps", "1", "-o", str(tmp_path / "x4")])
    assert carried.exit_code == 0, carried.output
    assert "camnoise run(s) with their own weights, which training does not carry" in " ".join(carried.output.split())
    trained = load_checkpoint(tmp_path / "x4" / "final")
    assert trained.prompt_weights == {} and trained.prompts.codes[0].equal(bank.code("noise25"))
    assert not any(trained.prompts.codes[1].equal(code) for code in own_bank.codes)

    # --own-weights: the prompt's own copy of some modules trains, the rest stays the checkpoint's
    owned = runner.invoke(app, ["train", "--degradations", "camnoise", "--init-weights", str(tmp_path / "own"),
                                "--own-weights", "refinement,output", *common, "--steps", "1", "-o", str(tmp_path / "x5")])
    assert owned.exit_code == 0, owned.output
    assert "only the prompt's own refinement, output train" in " ".join(owned.output.split())
    grown = load_checkpoint(tmp_path / "x5" / "final")
    assert grown.prompts.names == own_bank.names and grown.prompts.code("camnoise").equal(bank.code("noise25"))
    assert all(value.equal(start.model.state_dict()[key]) for key, value in grown.model.state_dict().items())
    assert set(grown.weights_of("camnoise") or {}) == {key for key in start.model.state_dict()
                                                       if key.split(".")[0] in ("refinement", "output")}
    for spec, degradations, message in (("decoder", "camnoise,rain", "one degradation"),
                                        ("nothing", "camnoise", "'nothing' is not a module")):
        refused = runner.invoke(app, ["train", "--degradations", degradations, "--init-weights", str(tmp_path / "own"),
                                      "--own-weights", spec, *common, "--steps", "1", "-o", str(tmp_path / "x6")])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    alone = runner.invoke(app, ["train", "--degradations", "rain", "--own-weights", "decoder", *MICRO_ARGS, *common,
                                "--steps", "1", "-o", str(tmp_path / "x7")])
    assert alone.exit_code == 2 and "pass --init-weights" in alone.output, alone.output

    save_checkpoint(tmp_path / "clip", start.model, dataclasses.replace(start.prompts, encoder="clip"))
    unknown = runner.invoke(app, ["train", "--degradations", "haze", "--init-weights", str(tmp_path / "clip"),
                                  *common, "--steps", "1", "-o", str(tmp_path / "x2")])
    assert unknown.exit_code == 2 and "no prompt code for haze" in unknown.output and "clip encoder" in unknown.output
    both = runner.invoke(app, ["train", "--degradations", "rain", "--init-weights", str(tmp_path / "base" / "final"),
                               "--preset", "tiny", *common, "--steps", "1", "-o", str(tmp_path / "y")])
    assert both.exit_code == 2 and "drop --preset and --text-dim" in both.output
    missing = runner.invoke(app, ["train", "--degradations", "rain", "--init-weights", str(tmp_path / "nothing"),
                                  *common, "--steps", "1", "-o", str(tmp_path / "z")])
    assert missing.exit_code == 2 and "no such file or folder" in missing.output


def test_train_finds_the_paper_sets_in_the_datasets_folder(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("DFPIR_DATA", str(data))
    for i in range(3):
        write_image(data / "train" / "denoise" / f"{i:04d}.png", seed=i)
        write_image(data / "train" / "Rain100L" / "rainy" / f"rain-{i + 1}.png", seed=i + 10)
        write_image(data / "train" / "Rain100L" / "gt" / f"norain-{i + 1}.png", seed=i)
    base = ["train", *MICRO_ARGS, "--steps", "1", "--finetune-steps", "0", "--patch-size", "32"]
    five = runner.invoke(app, [*base, "--tasks", "5", "-o", str(tmp_path / "five")])
    text = " ".join(five.output.split())
    assert five.exit_code == 2, five.output
    assert f"looked for the paper's training sets in {data / 'train'}" in text
    assert f"Found: noise ({data / 'train' / 'denoise'}), rain ({data / 'train' / 'Rain100L'})." in text
    assert "Missing: haze, blur, lowlight." in text and "RESIDE OTS" in text and "our485" in text
    assert f"files go to {data / 'train' / 'dehaze' / 'synthetic'}" in text
    assert not (tmp_path / "five").exists()

    for i in range(3):
        write_image(data / "train" / "dehaze" / "synthetic" / f"{i:04d}_0.8_0.1.png", seed=i + 20)
        write_image(data / "train" / "dehaze" / "original" / f"{i:04d}.png", seed=i)
    three = runner.invoke(app, [*base, "--tasks", "3", "-o", str(tmp_path / "three")])
    assert three.exit_code == 0, three.output
    assert "No data option given: the paper's training sets from" in " ".join(three.output.split())
    assert load_checkpoint(tmp_path / "three" / "final").prompts.names == ("noise15", "noise25", "noise50", "rain",
                                                                           "haze")
