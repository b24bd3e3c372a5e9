"""Checkpoint folders: round trip, strict loading, the recorded sha256, corrupt and hand-edited files, and the
reference importer."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MICRO, make_checkpoint, make_prompts
from PIL import Image
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.errors import CheckpointError, InputError, UnknownDegradationError
from dfpir_cli.model import DFPIR, PRESETS, DFPIRConfig
from dfpir_cli.weights.checkpoint import (
    PromptBank,
    import_reference,
    infer_config,
    load_checkpoint,
    read_reference_state_dict,
    save_checkpoint,
)


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
    with pytest.raises(UnknownDegradationError):
        bank.code("camera-noise")  # a camera's noise is not a Gaussian level's stand-in
    with_camera = make_prompts(16, names=("noise15", "camnoise"))
    assert torch.equal(with_camera.code("sigma50"), with_camera.codes[0])  # the one Gaussian level, as before
    assert torch.equal(with_camera.code("real-noise"), with_camera.codes[1])


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
    with pytest.raises(CheckpointError, match="does not match the sha256 recorded in .*corrupt or half-copied"):
        load_checkpoint(folder)
    _drop_recorded_sha256(folder)  # a folder from before the field: safetensors itself notices
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


# --- the recorded sha256 ------------------------------------------------------------------------------------------

def _drop_recorded_sha256(folder: Path) -> None:
    """Make ``folder`` look written before config.json recorded the sha256 of the weights."""
    config = json.loads((folder / "config.json").read_text())
    del config["weights_sha256"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def _flip(path: Path, position: int, bits: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= bits
    path.write_bytes(bytes(data))


def _header_end(path: Path) -> int:
    """Where the tensor data of a safetensors file begins: after the 8-byte length and the JSON header."""
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_the_sha256_of_the_weights_is_recorded_and_checked(tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    recorded = json.loads((folder / "config.json").read_text())["weights_sha256"]
    assert recorded == hashlib.sha256(weights.read_bytes()).hexdigest()
    middle = (_header_end(weights) + weights.stat().st_size) // 2
    _flip(weights, middle)  # one bit of one weight: still a valid file, so only the hash tells
    with pytest.raises(CheckpointError, match="model.safetensors does not match the sha256 recorded in .*config.json"):
        load_checkpoint(folder)
    _flip(weights, middle)
    load_checkpoint(folder)


def test_folders_without_the_recorded_sha256_still_load(tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    expected = load_checkpoint(folder).model.state_dict()
    _drop_recorded_sha256(folder)
    loaded = load_checkpoint(folder).model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in expected.items())


def test_weights_with_nan_are_refused(tmp_path):
    torch.manual_seed(0)
    model = DFPIR(MICRO)
    with torch.no_grad():
        model.output.weight[0, 0, 0, 0] = float("nan")
    folder = save_checkpoint(tmp_path / "nan", model, make_prompts(MICRO.text_dim))  # the hash matches the NaN
    with pytest.raises(CheckpointError, match=r"contain NaN or inf \(model\.output\.weight\)"):
        load_checkpoint(folder)


@pytest.mark.parametrize("name", ["default", "detector"])
def test_the_shipped_models_record_the_sha256_of_their_weights(name):
    folder = Path(__file__).resolve().parents[1] / "dfpir_cli" / "assets" / name
    recorded = json.loads((folder / "config.json").read_text())["weights_sha256"]
    assert recorded == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


# --- corrupt and hand-edited folders through `dfpir restore` ------------------------------------------------------
# Each folder is either refused with a clear message (exit 2, the folder named, no output written) or restores
# exactly as the intact one does; never a traceback or an internal error.

runner = CliRunner()
REMOVED = object()
BAD_VALUES = {"null": None, "list": [1], "string": "x", "negative": -3, "zero": 0, "huge": 10**12, "removed": REMOVED}
CONFIG_FIELDS = [("format",), ("format_version",), ("weights_sha256",), ("model",), ("prompts",), ("metadata",),
                 *(("model", name) for name in MICRO.to_dict()), ("prompts", "names"), ("prompts", "texts"),
                 ("prompts", "encoder")]
Mutation = Callable[[Path], None]


def _edit_config(edit: Callable[[dict], None]) -> Mutation:
    def mutate(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))
    return mutate


def _set(field: tuple[str, ...], value: object) -> Mutation:
    def edit(config: dict) -> None:
        *parents, last = field
        for key in parents:
            config = config[key]
        if value is REMOVED:
            del config[last]
        else:
            config[last] = value
    return _edit_config(edit)


def _prompt_names(edit: Callable[[list], None]) -> Mutation:
    return _edit_config(lambda config: edit(config["prompts"]["names"]))


def _config_bytes(data: bytes) -> Mutation:
    return lambda folder: (folder / "config.json").write_bytes(data)


def _weights(edit: Callable[[Path], None], recorded_sha256: bool = True) -> Mutation:
    def mutate(folder: Path) -> None:
        edit(folder / "model.safetensors")
        if not recorded_sha256:
            _drop_recorded_sha256(folder)
    return mutate


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def _flip_header(share: float) -> Callable[[Path], None]:
    return lambda path: _flip(path, int((_header_end(path) - 1) * share))


MUTATIONS = [
    *(pytest.param(_set(field, value), field[-1] if value is not REMOVED else None, id=f"{'.'.join(field)}={label}")
      for field in CONFIG_FIELDS for label, value in BAD_VALUES.items()),
    pytest.param(_prompt_names(lambda names: names.__setitem__(1, None)), "non-empty strings", id="names-with-null"),
    pytest.param(_prompt_names(lambda names: names.__setitem__(1, names[0])), "unique", id="names-duplicated"),
    pytest.param(_prompt_names(lambda names: names.__setitem__(0, "")), "non-empty strings", id="names-empty-string"),
    pytest.param(_edit_config(lambda config: config["prompts"]["texts"].pop()), "one text and one code per name",
                 id="texts-shorter-than-names"),
    pytest.param(_set(("prompts", "encoder"), "bert"), "unknown prompt encoder", id="encoder-unknown"),
    pytest.param(_set(("format_version",), 3), "made by a newer dfpir", id="format_version=3"),
    pytest.param(_set(("format_version",), [1]), "format_version", id="format_version=[1]"),
    pytest.param(_set(("model", "text_dim"), 32), "text_dim", id="text_dim-not-the-codes-width"),
    pytest.param(_set(("model", "dim"), 16), "do not fit the network", id="dim-not-the-weights"),
    pytest.param(_config_bytes(b'{"format": "dfpir", "format_v'), "not readable JSON", id="config-truncated"),
    pytest.param(_config_bytes(b"format: dfpir\n"), "not readable JSON", id="config-not-json"),
    pytest.param(_config_bytes(b"\xff\xfe\x00"), "not readable JSON", id="config-not-text"),
    pytest.param(_config_bytes(b"[1, 2]"), "not a dfpir config", id="config-a-json-list"),
    pytest.param(_weights(_flip_header(0.5)), "does not match the sha256", id="weights-header-flipped"),
    pytest.param(_weights(lambda path: _flip(path, path.stat().st_size - 5)), "does not match the sha256",
                 id="weights-data-flipped"),
    *(pytest.param(_weights(_flip_header(share), recorded_sha256=False), None, id=f"unrecorded-header-flipped-{share}")
      for share in (0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)),
    pytest.param(_weights(_truncate), "does not match the sha256", id="weights-truncated"),
    pytest.param(_weights(_truncate, recorded_sha256=False), "corrupt or truncated", id="unrecorded-weights-truncated"),
    pytest.param(_weights(lambda path: path.write_bytes(b"")), "does not match the sha256", id="weights-empty"),
    pytest.param(_weights(lambda path: path.write_bytes(b""), recorded_sha256=False), "corrupt or truncated",
                 id="unrecorded-weights-empty"),
]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(path)
    return path


def _restore(photo: Path, weights: Path, output: Path):
    return runner.invoke(app, ["restore", str(photo), "-w", str(weights), "-d", "rain", "-o", str(output),
                               "--device", "cpu", "--precision", "fp32", "-q"])


@pytest.fixture(scope="module")
def intact_restoration(micro_checkpoint: Path, photo: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    output = tmp_path_factory.mktemp("intact")
    result = _restore(photo, micro_checkpoint, output)
    assert result.exit_code == 0, result.output
    return (output / photo.name).read_bytes()


@pytest.mark.parametrize(("mutate", "message"), MUTATIONS)
def test_restore_refuses_or_restores_a_mutated_checkpoint(tmp_path, micro_checkpoint, photo, intact_restoration,
                                                          mutate: Mutation, message: str | None):
    folder = shutil.copytree(micro_checkpoint, tmp_path / "ckpt")
    mutate(folder)
    output = tmp_path / "out"
    result = _restore(photo, folder, output)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    if result.exit_code == 0:
        assert message is None, f"restored although {message!r} was expected to refuse it"
        assert (output / photo.name).read_bytes() == intact_restoration
        return
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and str(folder) in result.output, result.output
    assert message is None or message in result.output, result.output
    assert not output.exists() or not any(output.iterdir())
