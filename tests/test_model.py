"""Conformance of the network with the reference fixtures, ablation switches, and input checks."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import MICRO

from dfpir_cli.errors import InputError
from dfpir_cli.model import DFPIR, PRESETS, DFPIRConfig, restore_any_size


def test_reference_fixture_is_reproduced(reference_tiny):
    config, tensors = reference_tiny
    model = DFPIR(config).eval()
    weights = {key.removeprefix("model."): value for key, value in tensors.items() if key.startswith("model.")}
    model.load_state_dict(weights, strict=True)
    with torch.inference_mode():
        output = model(tensors["io.input"], tensors["io.text_code"])
    assert output.shape == tensors["io.output"].shape
    assert (output - tensors["io.output"]).abs().max().item() <= 1e-4


def test_reference_fixture_parameter_count(reference_tiny, fixtures_dir):
    config, _ = reference_tiny
    expected = json.loads((fixtures_dir / "dfpir_reference_tiny.json").read_text())["num_parameters"]
    assert sum(p.numel() for p in DFPIR(config).parameters()) == expected


def test_paper_preset_matches_reference_keys_and_size(fixtures_dir):
    reference = json.loads((fixtures_dir / "dfpir_reference_paper_keys.json").read_text())
    model = DFPIR(PRESETS["paper"])
    assert sum(p.numel() for p in model.parameters()) == 31_104_761 == reference["num_parameters"]
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert shapes == reference["state_dict"]


def test_dgpb_parameters_match_the_design():
    model = DFPIR(PRESETS["paper"])
    dgpb = sum(p.numel() for name, p in model.named_parameters() if "shuffle_channel" in name)
    assert dgpb == 4_978_117


def test_each_sample_uses_its_own_code():
    torch.manual_seed(0)
    model = DFPIR(MICRO).eval()
    image = torch.rand(1, 3, 16, 24).expand(2, -1, -1, -1).contiguous()
    codes = torch.randn(2, MICRO.text_dim)
    with torch.inference_mode():
        batched = model(image, codes)
        first = model(image[:1], codes[:1])
        second = model(image[1:], codes[1:])
    torch.testing.assert_close(batched, torch.cat([first, second]), atol=1e-5, rtol=1e-5)
    assert (first - second).abs().max() > 1e-6  # different prompts, different outputs


@pytest.mark.parametrize("perturbation,caapm", [("shuffle", True), ("shuffle", False), ("attention", True),
                                                ("attention", False), ("none", True), ("none", False)])
def test_ablation_variants_run_and_train(perturbation, caapm):
    config = DFPIRConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, text_dim=16,
                         channel_perturbation=perturbation, caapm=caapm, gamma=0.5)
    model = DFPIR(config)
    image = torch.rand(2, 3, 16, 16)
    output = model(image, torch.randn(2, 16))
    output.mean().backward()
    assert output.shape == image.shape
    has_dgpb = any("shuffle_channel" in key for key in model.state_dict())
    assert has_dgpb == (perturbation != "none" or caapm)


def test_restormer_baseline_has_no_dgpb_and_ignores_the_prompt():
    model = DFPIR(PRESETS["restormer"])
    assert not any("shuffle_channel" in key for key in model.state_dict())
    small = DFPIR(DFPIRConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1,
                              channel_perturbation="none", caapm=False)).eval()
    image = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(small(image, torch.randn(1, 512)), small(image, torch.randn(1, 512)))


def test_dgm_gets_no_gradient():
    """DESIGN.md section 2: topk indices carry no gradient, so the DGM never trains."""
    model = DFPIR(MICRO)
    model(torch.rand(1, 3, 16, 16), torch.randn(1, MICRO.text_dim)).mean().backward()
    grad = model.encoder_shuffle_channel1.linear_layer1.weight.grad
    assert grad is None or grad.abs().max() == 0
    assert model.encoder_shuffle_channel1.conv1x1.weight.grad.abs().max() > 0


def test_size_not_multiple_of_eight_points_to_padding_helper():
    model = DFPIR(MICRO).eval()
    with pytest.raises(InputError, match="restore_any_size"):
        model(torch.rand(1, 3, 20, 16), torch.randn(1, MICRO.text_dim))


def test_wrong_text_code_shape_is_explained():
    model = DFPIR(MICRO).eval()
    with pytest.raises(InputError, match=r"text code must have shape"):
        model(torch.rand(2, 3, 16, 16), torch.randn(1, MICRO.text_dim))
    with pytest.raises(InputError, match=r"text code must have shape"):
        model(torch.rand(1, 3, 16, 16), torch.randn(1, 512))


def test_wrong_image_shape_is_explained():
    model = DFPIR(MICRO).eval()
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 16, 16), torch.randn(1, MICRO.text_dim))


@pytest.mark.parametrize("height,width", [(21, 35), (8, 8), (5, 3), (17, 64)])
def test_restore_any_size_pads_and_crops(height, width):
    torch.manual_seed(0)
    model = DFPIR(MICRO).eval()
    image = torch.rand(1, 3, height, width)
    with torch.inference_mode():
        output = restore_any_size(model, image, torch.randn(1, MICRO.text_dim))
    assert output.shape == image.shape


def test_restore_any_size_is_identity_on_multiples():
    torch.manual_seed(0)
    model = DFPIR(MICRO).eval()
    image, code = torch.rand(1, 3, 16, 24), torch.randn(1, MICRO.text_dim)
    with torch.inference_mode():
        torch.testing.assert_close(restore_any_size(model, image, code), model(image, code))


def test_config_round_trip_and_validation():
    config = PRESETS["small"]
    assert DFPIRConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert DFPIRConfig.from_dict({"LayerNorm_type": "BiasFree"}).layernorm_type == "BiasFree"
    with pytest.raises(ValueError, match="unknown config keys"):
        DFPIRConfig.from_dict({"dimm": 8})
    with pytest.raises(ValueError, match="gamma"):
        DFPIRConfig(gamma=0.0)
    with pytest.raises(ValueError, match="heads"):
        DFPIRConfig(dim=6, heads=(4, 2, 4, 8))
    with pytest.raises(ValueError, match="JSON object"):
        DFPIRConfig.from_dict([])  # type: ignore[arg-type]
    assert DFPIRConfig.from_dict({"gamma": 1}).gamma == 1  # a whole number is a number


@pytest.mark.parametrize(("field", "value", "message"), [
    ("dim", True, "dim must be a whole number"), ("dim", 8.0, "dim must be a whole number"),
    ("dim", "8", "dim must be a whole number"), ("dim", 0, "dim must be at least 1"), ("dim", 9, "dim must be even"),
    ("dim", 10**9, "channels wide"), ("num_blocks", [1, 1, 1], "list of 4 whole numbers"),
    ("num_blocks", [1, 1, 1, None], "list of 4 whole numbers"),
    ("num_blocks", [1, 1, 0, 1], r"num_blocks\[2\] must be at least 1"),
    ("num_refinement_blocks", 10**6, "must be at most 64"), ("heads", [1, 2, 4, 0], r"heads\[3\] must be at least 1"),
    ("bias", 0, "bias must be true or false"), ("caapm", "true", "caapm must be true or false"),
    ("gamma", None, "gamma must be a finite number"), ("gamma", float("nan"), "gamma must be a finite number"),
    ("ffn_expansion_factor", float("inf"), "finite number"), ("ffn_expansion_factor", -1, "positive number"),
    ("ffn_expansion_factor", 0.01, "no hidden channel"), ("text_dim", -512, "text_dim must be at least 1"),
    ("out_channels", 1, "in_channels 3 and out_channels 1 differ"), ("layernorm_type", None, "must be a string"),
])
def test_config_from_json_checks_types_and_ranges(field, value, message):
    with pytest.raises(ValueError, match=message):
        DFPIRConfig.from_dict({**PRESETS["tiny"].to_dict(), field: value})
