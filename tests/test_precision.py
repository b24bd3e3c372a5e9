"""Precision: names, what auto picks, the per-checkpoint bf16 check and its cache, the model's fp32 islands."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import MICRO, make_prompts

from dfpir_cli import precision, precision_check
from dfpir_cli.checkpoint import Checkpoint
from dfpir_cli.errors import InputError
from dfpir_cli.model import DFPIR
from dfpir_cli.precision import check_precision, resolve_precision

CPU = torch.device("cpu")


def micro(seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    return Checkpoint(DFPIR(MICRO).eval(), make_prompts(MICRO.text_dim))


def test_names_and_forced_precisions() -> None:
    assert check_precision(" BF16 ") == "bf16"
    with pytest.raises(InputError, match="choose one of auto, fp32, bf16, fp16"):
        check_precision("fp8")
    assert resolve_precision("fp32", CPU) == (torch.float32, "")
    dtype, note = resolve_precision("fp16", CPU)
    assert dtype is torch.float32 and "needs a GPU" in note
    assert resolve_precision("bf16", CPU)[0] is torch.bfloat16


def test_auto_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == (torch.float32, "")
    assert "emulated" in resolve_precision("bf16", CPU)[1]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == (torch.bfloat16, "")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    assert precision._NATIVE_BF16_FLAGS & precision._cpu_flags(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert not precision._NATIVE_BF16_FLAGS & precision._cpu_flags(cpuinfo)
    assert precision._cpu_flags(tmp_path / "absent") == frozenset()


def test_auto_checks_bf16_once_per_checkpoint_and_caches_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(precision_check.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(precision_check, "native_bf16", lambda device: True)
    calls = []
    checkpoint = micro()
    choice = precision_check.inference_precision(checkpoint, CPU, "auto", lambda: calls.append(1))
    assert calls == [1] and choice.agreement_db is not None
    assert 10 < choice.agreement_db < 200
    assert (choice.dtype is torch.bfloat16) == (choice.agreement_db >= precision_check.AGREEMENT_DB)
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert len(cached) == 1 and next(iter(cached)).startswith(precision_check.fingerprint(checkpoint))
    again = precision_check.inference_precision(checkpoint, CPU, "auto", lambda: calls.append(1))
    assert calls == [1] and again == choice  # from the cache
    monkeypatch.setattr(precision_check, "ARITHMETIC_VERSION", precision_check.ARITHMETIC_VERSION + 1)
    precision_check.inference_precision(checkpoint, CPU, "auto", lambda: calls.append(1))
    assert calls == [1, 1]  # new arithmetic: checked again
    other = micro(seed=1)
    assert precision_check.fingerprint(other) != precision_check.fingerprint(checkpoint)
    monkeypatch.setattr(precision_check, "AGREEMENT_DB", 999.0)
    refused = precision_check.inference_precision(other, CPU, "auto", lambda: calls.append(2))
    assert calls == [1, 1, 2] and refused.dtype is torch.float32 and "auto chose fp32" in refused.note
    monkeypatch.setattr(precision_check, "AGREEMENT_DB", 0.0)
    accepted = precision_check.inference_precision(other, CPU, "auto", lambda: calls.append(2))
    assert calls == [1, 1, 2] and accepted.dtype is torch.bfloat16 and not accepted.note
    forced = precision_check.inference_precision(other, CPU, "bf16", lambda: calls.append(3))
    assert forced.dtype is torch.bfloat16 and calls == [1, 1, 2]  # forcing checks nothing


def test_auto_without_native_bf16_measures_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_check, "native_bf16", lambda device: False)
    choice = precision_check.inference_precision(micro(), CPU, "auto", lambda: pytest.fail("measured"))
    assert choice == precision_check.Choice(torch.float32)


def test_prompt_order_and_caapm_stay_fp32_under_bf16_autocast() -> None:
    """The DGM scores decide a channel permutation and CAAPM a top-k: both must not see bf16 rounding."""
    model = micro().model
    dgpb = model.encoder_shuffle_channel1
    code = make_prompts(MICRO.text_dim).codes[:1]
    feature = torch.randn(1, MICRO.dim, 16, 16).contiguous(memory_format=torch.channels_last)
    seen = {}
    dgpb.linear_layer3.register_forward_hook(lambda module, inputs, output: seen.update(scores=output.dtype))
    dgpb.select_attn.register_forward_hook(lambda module, inputs, output: seen.update(attention=output.dtype))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = dgpb(feature, code)
    assert seen == {"scores": torch.float32, "attention": torch.float32}
    with torch.inference_mode():
        reference = dgpb(feature, code)
    assert torch.allclose(out.float(), reference, atol=0.05, rtol=0.05)
