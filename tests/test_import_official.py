"""`dfpir fetch-weights --import-official`: the authors' .pth.tar files become dfpir checkpoints.

The prompt codes go through ClipTextEncoder.encode, the code path the real CLIP weights take; the
encoder wraps a randomly initialised open_clip ViT-B-32 (the OpenAI weights need the network).
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import PUBLISHED_FIVE_TASK, published_checkpoint_bytes, reference_checkpoint_bytes
from hub_server import closed_port_endpoint, point_client_at
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.weights.checkpoint import LEGACY_KEYS, load_checkpoint
from dfpir_cli.weights.prompts import FIVE_TASK, THREE_TASK, vocabulary

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def reference_file(tmp_path, reference_tiny):
    """The fixture's weights saved the way the reference training saves them."""
    path = tmp_path / "DFPIR-5d.pth.tar"
    path.write_bytes(reference_checkpoint_bytes(reference_tiny[1]))
    return path


def test_import_reproduces_the_reference_output(tmp_path, reference_tiny, reference_file, clip_loads, random_clip):
    config, tensors = reference_tiny
    output = tmp_path / "dfpir-5d"
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(reference_file), "--prompts", "five-task",
                                 "--output", str(output), "--clip-weights", str(tmp_path / "clip.safetensors")])
    assert result.exit_code == 0, result.output
    assert clip_loads == [tmp_path / "clip.safetensors"]
    assert f"--weights {output}" in flat(result.output)
    checkpoint = load_checkpoint(output)
    assert checkpoint.config == config
    texts = tuple(vocabulary("five-task").values())
    assert checkpoint.prompts.names == FIVE_TASK and checkpoint.prompts.texts == texts
    assert checkpoint.prompts.encoder == "clip" and checkpoint.metadata["tasks"] == list(FIVE_TASK)
    torch.testing.assert_close(checkpoint.prompts.codes, random_clip.encode(list(texts)), rtol=0, atol=0)
    with torch.inference_mode():
        restored = checkpoint.model(tensors["io.input"], tensors["io.text_code"])
        by_name = checkpoint.model(tensors["io.input"][:1], checkpoint.prompts.code("hazy")[None])
    assert (restored - tensors["io.output"]).abs().max() <= 1e-4
    assert by_name.shape == (1, 3, *tensors["io.input"].shape[2:]) and torch.isfinite(by_name).all()


def test_three_task_simple_vocabulary(tmp_path, reference_file, clip_loads):
    output = tmp_path / "dfpir-3d-simple"
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(reference_file),
                                 "--prompts", "three-task-simple", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert clip_loads == [None]  # the cached CLIP weights
    prompts = load_checkpoint(output).prompts
    assert prompts.names == THREE_TASK and prompts.texts == ("Noise", "Noise", "Noise", "Rain", "Haze")
    assert torch.equal(prompts.code("noise15"), prompts.code("noise50"))  # one prompt for every noise level
    assert not torch.equal(prompts.code("rain"), prompts.code("haze"))


def test_empty_checkpoint_is_recognised_before_clip(tmp_path, clip_loads):
    torch.save({}, tmp_path / "epoch_12.pth.tar")
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(tmp_path / "epoch_12.pth.tar"),
                                 "--prompts", "five-task", "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "empty checkpoint ({}): the reference training writes these when validation did not improve" in flat(
        result.output)
    assert "Traceback" not in result.output
    assert clip_loads == [] and not (tmp_path / "out").exists()


def test_unknown_keys_are_refused_and_listed(tmp_path, reference_tiny, clip_loads):
    _, tensors = reference_tiny
    state = {key.removeprefix("model."): value for key, value in tensors.items() if key.startswith("model.")}
    state["prompt_block.extra.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "odd.pth.tar")
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(tmp_path / "odd.pth.tar"),
                                 "--prompts", "five-task", "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "unexpected keys (1): prompt_block.extra.weight" in flat(result.output)
    assert not (tmp_path / "out").exists()


def test_existing_output_is_kept_unless_forced(tmp_path, reference_file, clip_loads):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    arguments = ["fetch-weights", "--import-official", str(reference_file), "--prompts", "three-task",
                 "--output", str(output)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2 and "already exists and is not empty" in flat(result.output)
    assert (output / "notes.txt").read_text() == "mine"
    result = runner.invoke(app, [*arguments, "--force"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(output).prompts.names == THREE_TASK


def test_import_needs_prompts_and_output(tmp_path, reference_file):
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(reference_file)])
    assert result.exit_code == 2 and "--import-official needs --prompts" in flat(result.output)
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(reference_file), "--prompts", "six-task",
                                 "--output", str(tmp_path / "x")])
    assert result.exit_code == 2 and "six-task" in result.output


def test_missing_clip_weights_say_how_to_get_them(monkeypatch, tmp_path, reference_file):
    point_client_at(monkeypatch, closed_port_endpoint(), tmp_path / "hf")  # an empty cache, no network
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(reference_file), "--prompts", "five-task",
                                 "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "dfpir fetch-weights --clip" in flat(result.output) and not (tmp_path / "out").exists()
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(reference_file), "--prompts", "five-task",
                                 "--output", str(tmp_path / "out"), "--clip-weights", str(tmp_path / "nope.bin")])
    assert result.exit_code == 2 and "nope.bin does not exist" in flat(result.output)


# ---------------------------------------------------------------------------------------------------------------
# The authors' files as published: 12 obsolete scalars, optimizer and scheduler state beside the weights


def test_published_layout_imports_and_records_the_dropped_keys(tmp_path, reference_tiny, clip_loads):
    config, tensors = reference_tiny
    source = tmp_path / PUBLISHED_FIVE_TASK
    source.write_bytes(published_checkpoint_bytes(config, tensors))
    payload = torch.load(source, weights_only=True)  # the replica is what the issue describes
    assert set(payload) == {"epoch", "state_dict", "optimizer", "scheduler"}
    assert payload["optimizer"]["state"] and "exp_avg" in payload["optimizer"]["state"][0]
    assert payload["scheduler"]["T_max"] == 150 and len(LEGACY_KEYS & set(payload["state_dict"])) == 12

    output = tmp_path / "dfpir-5d"
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(source), "--prompts", "five-task",
                                 "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "dropped: 12 obsolete scalars" in flat(result.output)
    checkpoint = load_checkpoint(output)
    provenance = checkpoint.metadata["provenance"]
    assert provenance["dropped_keys"] == sorted(LEGACY_KEYS) and provenance["file_name"] == PUBLISHED_FIVE_TASK
    assert provenance["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    with torch.inference_mode():
        restored = checkpoint.model(tensors["io.input"], tensors["io.text_code"])
    assert (restored - tensors["io.output"]).abs().max() <= 1e-4

    described = runner.invoke(app, ["info", str(output)], terminal_width=200)
    assert described.exit_code == 0, described.output
    assert "provenance: dropped_keys" in described.output
    assert all(key in described.output for key in LEGACY_KEYS)


@pytest.mark.parametrize(("extra", "listed"), [
    ({"prompt_block.extra.weight": torch.zeros(3)}, "unexpected keys (1): prompt_block.extra.weight"),
    # a legacy name is dropped only where it holds one number
    ({"encoder_shuffle_channel1.select_attn.attn1": torch.zeros(3)},
     "unexpected keys (1): encoder_shuffle_channel1.select_attn.attn1"),
    ({"latent_shuffle_channel.select_attn.attn5": torch.tensor([0.2])},
     "unexpected keys (1): latent_shuffle_channel.select_attn.attn5"),
])
def test_any_other_stray_key_is_still_refused(tmp_path, reference_tiny, clip_loads, extra, listed):
    config, tensors = reference_tiny
    source = tmp_path / PUBLISHED_FIVE_TASK
    source.write_bytes(published_checkpoint_bytes(config, tensors, extra))
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(source), "--prompts", "five-task",
                                 "--output", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert listed in flat(result.output) and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_missing_weight_is_not_excused_by_the_legacy_rule(tmp_path, reference_tiny, clip_loads):
    config, tensors = reference_tiny
    trimmed = {key: value for key, value in tensors.items()
               if key != "model.encoder_shuffle_channel2.select_attn.attn4"}
    source = tmp_path / PUBLISHED_FIVE_TASK
    source.write_bytes(published_checkpoint_bytes(config, trimmed))
    result = runner.invoke(app, ["fetch-weights", "--import-official", str(source), "--prompts", "five-task",
                                 "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "missing keys (1): encoder_shuffle_channel2.select_attn.attn4" in flat(result.output)
