"""Checkpoint folders: round trip, strict loading, corrupt files, and the reference importer."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import MICRO, make_checkpoint, make_prompts

from dfpir_cli.checkpoint import (
    PromptBank,
    import_reference,
    infer_config,
    load_checkpoint,
    read_reference_state_dict,
    save_checkpoint,
)
from dfpir_cli.errors import CheckpointError, InputError, UnknownDegradationError
from dfpir_cli.model import DFPIR, PRESETS, DFPIRConfig


def test_round_trip_keeps_weights_prompts_and_metadata(tmp_path):
    torch.manual_seed(1)
    model = DFPIR(MICRO).eval()
    prompts = make_prompts(MICRO.text_dim)
    folder = save_checkpoint(tmp_path / "ckpt", model, prompts, {"tasks": ["rain"], "steps": 3})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_checkpoint(folder)
    assert loaded.config == MICRO
    assert loaded.metadata == {"tasks": ["rain"], "steps": 3}
    assert loaded.prompts.names == prompts.names and loaded.prompts.encoder == "random"
    torch.testing.assert_close(loaded.prompts.codes, prompts.codes)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    image = torch.rand(1, 3, 16, 16)
    code = loaded.prompts.code("rainy")[None]
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(image, code), model(image, code))


def test_save_overwrites_atomically_and_leaves_no_temporaries(tmp_path):
    make_checkpoint(tmp_path / "ckpt", seed=0)
    make_checkpoint(tmp_path / "ckpt", seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    load_checkpoint(tmp_path / "ckpt" / "model.safetensors")  # the file path works too


def test_prompt_bank_resolves_aliases_and_lists_what_it_knows():
    bank = make_prompts(16, names=("noise25", "rain"))
    assert torch.equal(bank.code("noisy"), bank.codes[0])
    assert torch.equal(bank.code("Rainy"), bank.codes[1])
    assert torch.equal(bank.code("noise"), bank.codes[0])
    with pytest.raises(UnknownDegradationError, match="does not know the degradation 'haze'") as info:
        bank.code("haze")
    assert "noise25" in str(info.value) and "rainy" in str(info.value)
    with pytest.raises(UnknownDegradationError):
        bank.code("noise50")  # a canonical name the checkpoint lacks is not silently swapped


def test_prompt_bank_rejects_mismatched_sizes():
    with pytest.raises(InputError, match="one text and one code per name"):
        PromptBank(("rain",), ("a", "b"), torch.zeros(1, 16))


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["num_refinement_blocks"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\):\n    refinement\.1\."):
        load_checkpoint(folder)


def test_shape_mismatch_is_listed(tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["ffn_expansion_factor"] = 3.0
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(folder)


def test_corrupt_weights_file_is_reported(tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(folder)


def test_corrupt_config_and_non_checkpoints_are_reported(tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a dfpir checkpoint"):
        load_checkpoint(tmp_path / "empty")


def _reference_state(reference_tiny):
    _, tensors = reference_tiny
    return {key.removeprefix("model."): value for key, value in tensors.items() if key.startswith("model.")}


@pytest.mark.parametrize("wrap", ["state_dict+module", "bare"])
def test_import_reference_reproduces_the_fixture(tmp_path, reference_tiny, wrap):
    config, tensors = reference_tiny
    state = _reference_state(reference_tiny)
    payload = {"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrap != "bare" else state
    torch.save(payload, tmp_path / "ref.pth.tar")
    prompts = make_prompts(512, names=("rain", "haze"))
    checkpoint = import_reference(tmp_path / "ref.pth.tar", prompts)
    assert checkpoint.config == config  # read off the weights
    with torch.inference_mode():
        output = checkpoint.model(tensors["io.input"], tensors["io.text_code"])
    assert (output - tensors["io.output"]).abs().max() <= 1e-4


def test_infer_config_reads_the_paper_model():
    assert infer_config(DFPIR(PRESETS["paper"]).state_dict()) == PRESETS["paper"]
    assert infer_config(DFPIR(PRESETS["restormer"]).state_dict()) == PRESETS["restormer"]


def test_empty_reference_checkpoint_is_recognised(tmp_path):
    torch.save({}, tmp_path / "empty.pth.tar")
    with pytest.raises(CheckpointError, match="validation did not improve"):
        read_reference_state_dict(tmp_path / "empty.pth.tar")
    torch.save({"state_dict": {}}, tmp_path / "empty2.pth.tar")
    with pytest.raises(CheckpointError, match="validation did not improve"):
        read_reference_state_dict(tmp_path / "empty2.pth.tar")


def test_reference_with_wrong_keys_is_refused(tmp_path, reference_tiny):
    state = _reference_state(reference_tiny)
    state["extra.weight"] = torch.zeros(1)
    del state["output.weight"]
    torch.save({"state_dict": state}, tmp_path / "ref.pth")
    config = DFPIRConfig.from_dict(reference_tiny[0].to_dict())
    with pytest.raises(CheckpointError) as info:
        import_reference(tmp_path / "ref.pth", make_prompts(512), config=config)
    assert "output.weight" in str(info.value) and "extra.weight" in str(info.value)


class NotATensor:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_pickled_objects_and_garbage_are_refused(tmp_path):
    torch.save({"state_dict": {"a": NotATensor()}}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_reference_state_dict(tmp_path / "evil.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_reference_state_dict(tmp_path / "garbage.pth")


def test_half_precision_storage_loads_into_float32(tmp_path):
    torch.manual_seed(0)
    model = DFPIR(MICRO).eval()
    folder = save_checkpoint(tmp_path / "half", model, make_prompts(MICRO.text_dim), dtype=torch.float16)
    loaded = load_checkpoint(folder)
    weight = loaded.model.state_dict()["output.weight"]
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, model.state_dict()["output.weight"], atol=1e-3, rtol=1e-3)
