"""A prompt's own weights (Checkpoint.prompt_weights): stored, checked, and run by restore, eval, export and ONNX
Runtime in place of the shared ones for that prompt alone (issue 32: camnoise's own decoder in the default model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MICRO, make_prompts
from safetensors.torch import load_file, save_file

from dfpir_cli.errors import CheckpointError
from dfpir_cli.evaluate.benchmark import EvalOptions, restore_array
from dfpir_cli.model import DFPIR
from dfpir_cli.restore.pipeline import Restorer
from dfpir_cli.restore.precision_check import fingerprint
from dfpir_cli.weights.checkpoint import (
    Checkpoint,
    PromptBank,
    load_checkpoint,
    prompt_weights_applied,
    read_config,
    save_checkpoint,
)
from dfpir_cli.weights.export import baked
from dfpir_cli.weights.prompts import DEGRADATIONS, FIVE_TASK

NAMES = (*FIVE_TASK, "camnoise")


def _with_camnoise(tmp_path: Path, dtype: torch.dtype | None = None) -> tuple[Path, DFPIR, dict[str, torch.Tensor]]:
    """A micro checkpoint whose camnoise runs noise15's code and its own decoder (another seed's)."""
    torch.manual_seed(0)
    model = DFPIR(MICRO).eval()
    torch.manual_seed(1)
    donor = DFPIR(MICRO).eval()
    bank = make_prompts(MICRO.text_dim)
    prompts = PromptBank(NAMES, tuple(DEGRADATIONS[name].text for name in NAMES),
                         torch.cat([bank.codes, bank.code("noise15")[None]]), "random")
    own = {key: value for key, value in donor.state_dict().items() if key.split(".")[0] in DFPIR.decoder_modules}
    folder = save_checkpoint(tmp_path / "ckpt", model, prompts, {"tasks": list(NAMES)}, dtype=dtype,
                             prompt_weights={"camnoise": own})
    return folder, donor, own


def _as_camnoise_runs(model: DFPIR, own: dict[str, torch.Tensor]) -> DFPIR:
    network = DFPIR(MICRO).eval()
    network.load_state_dict({**model.state_dict(), **own})
    return network


def test_a_prompts_own_weights_round_trip_and_replace_the_shared_ones_for_it_alone(tmp_path):
    folder, _, own = _with_camnoise(tmp_path)
    assert read_config(folder / "config.json")["format_version"] == 2
    checkpoint = load_checkpoint(folder)
    assert set(checkpoint.prompt_weights) == {"camnoise"}
    assert checkpoint.weights_of("noise15") is None and checkpoint.weights_of(None) is None
    mine = checkpoint.weights_of("camera-noise")  # an alias finds them too
    assert mine is not None and set(mine) == set(own)
    for key, value in own.items():
        torch.testing.assert_close(mine[key], value)
    shared = {key: value.clone() for key, value in checkpoint.model.state_dict().items()}
    image, code = torch.rand(1, 3, 16, 24), checkpoint.prompts.code("camnoise")[None]
    with torch.inference_mode():
        expected = _as_camnoise_runs(checkpoint.model, own)(image, code)
        plain = checkpoint.model(image, code)
        with prompt_weights_applied(checkpoint.model, mine):
            swapped = checkpoint.model(image, code)
    torch.testing.assert_close(swapped, expected)
    assert not torch.allclose(plain, expected)
    for key, value in checkpoint.model.state_dict().items():  # the shared weights are back
        assert torch.equal(value, shared[key]), key


def test_checkpoints_without_own_weights_stay_format_version_1(tmp_path):
    folder = save_checkpoint(tmp_path / "plain", DFPIR(MICRO), make_prompts(MICRO.text_dim))
    assert read_config(folder / "config.json")["format_version"] == 1
    assert load_checkpoint(folder).prompt_weights == {}


def test_float16_storage_of_own_weights(tmp_path):
    folder, _, own = _with_camnoise(tmp_path, torch.float16)
    mine = load_checkpoint(folder).weights_of("camnoise")
    assert mine is not None and all(value.dtype == torch.float32 for value in mine.values())
    key = next(iter(own))
    torch.testing.assert_close(mine[key], own[key].half().float())


def _rewrite(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "dfpir"})
    config = json.loads((folder / "config.json").read_text())
    config.pop("weights_sha256")
    (folder / "config.json").write_text(json.dumps(config))


def _rename(old: str, new: str):
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        key = next(key for key in tensors if key.startswith(old))
        tensors[new + key.removeprefix(old)] = tensors.pop(key)
    return edit


def _reshape(tensors: dict[str, torch.Tensor]) -> None:
    key = next(key for key in tensors if key.startswith("prompt_weights.camnoise.model.output"))
    tensors[key] = torch.zeros(2, 2)


@pytest.mark.parametrize(("edit", "message"), [
    (_rename("prompt_weights.camnoise.", "prompt_weights.fog."), "own weights for the prompt 'fog'"),
    (_rename("prompt_weights.camnoise.model.output", "prompt_weights.camnoise.model.nothing"), "do not fit the network"),
    (_rename("prompt_weights.camnoise.model.", "prompt_weights.camnoise.weights."), "must be named"),
    (_reshape, "do not fit the network"),
], ids=["unknown-prompt", "unknown-key", "bad-name", "misshapen"])
def test_own_weights_that_do_not_fit_are_refused(tmp_path, edit, message):
    folder, _, _ = _with_camnoise(tmp_path)
    _rewrite(folder, edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_saving_own_weights_for_a_prompt_the_bank_lacks_is_refused(tmp_path):
    model = DFPIR(MICRO)
    own = {"output.weight": model.output.weight.detach()}
    with pytest.raises(CheckpointError, match="'camnoise'"):
        save_checkpoint(tmp_path / "x", model, make_prompts(MICRO.text_dim), prompt_weights={"camnoise": own})


def _expected(tmp_path: Path) -> tuple[Checkpoint, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The micro checkpoint, an image, and the image run as camnoise runs it and as noise15 (its code) does."""
    folder, _, own = _with_camnoise(tmp_path)
    checkpoint = load_checkpoint(folder)
    image = torch.rand(3, 24, 32)
    code = checkpoint.prompts.code("camnoise")[None]
    with torch.inference_mode():
        expected = _as_camnoise_runs(checkpoint.model, own)(image[None], code)[0].clamp(0, 1)
        noise15 = checkpoint.model(image[None], code)[0].clamp(0, 1)
    return checkpoint, image, expected, noise15


def test_restore_eval_and_export_run_a_prompt_with_its_own_weights(tmp_path):
    checkpoint, image, expected, noise15 = _expected(tmp_path)
    restorer = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=0)
    plan = restorer.plan(24, 32, ("camnoise", "noise15"))
    assert plan.passes[0].weights is not None and plan.passes[1].weights is None
    assert "its own weights" in str(plan) and str(plan).count("its own weights") == 1
    torch.testing.assert_close(restorer.restore(image, names=("camnoise",)), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(restorer.restore(image, names=("noise15",)), noise15, atol=1e-5, rtol=0)
    pixels = image.permute(1, 2, 0).numpy()
    evaluated = restore_array(checkpoint, pixels, "camnoise", EvalOptions(precision="fp32", tile=0), torch.device("cpu"))
    np.testing.assert_allclose(evaluated, expected.permute(1, 2, 0).numpy(), atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(baked(checkpoint, "camnoise")(image[None])[0], expected, atol=1e-5, rtol=0)
    assert fingerprint(checkpoint, "camnoise") != fingerprint(checkpoint, "noise15")
    assert fingerprint(checkpoint) not in (fingerprint(checkpoint, "camnoise"), fingerprint(checkpoint, "noise15"))


def test_the_onnxruntime_backend_runs_a_prompt_with_its_own_weights(tmp_path):
    pytest.importorskip("onnxruntime")
    checkpoint, image, expected, noise15 = _expected(tmp_path)
    restorer = Restorer(checkpoint, None, torch.device("cpu"), "fp32", tile=0, backend="onnxruntime")
    torch.testing.assert_close(restorer.restore(image, names=("camnoise",)), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(restorer.restore(image, names=("noise15",)), noise15, atol=1e-4, rtol=0)
    assert set(restorer.onnx_guards) == {None, "camnoise"}


def test_the_default_models_camnoise_has_its_own_decoder_and_noise15s_code():
    from dfpir_cli.weights.resolve import resolve_weights

    checkpoint = resolve_weights(None)
    own = checkpoint.weights_of("camnoise")
    assert own is not None and set(checkpoint.prompt_weights) == {"camnoise"}
    assert {key.split(".")[0] for key in own} == set(DFPIR.decoder_modules)
    assert torch.equal(checkpoint.prompts.code("camnoise"), checkpoint.prompts.code("noise15"))
