"""Precision: names, what auto picks, the per-checkpoint bf16 check and its cache, the model's fp32 islands, and the
re-run of passes whose output is not finite (FiniteGuard), alone and through `dfpir restore` and `dfpir eval`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MICRO, make_prompts
from PIL import Image
from typer.testing import CliRunner

from dfpir_cli.base import precision
from dfpir_cli.base.precision import FiniteGuard, Reruns, check_precision, native_bf16, resolve_precision, safer_precision
from dfpir_cli.cli import app
from dfpir_cli.data.test_sets import TestSet
from dfpir_cli.errors import InputError
from dfpir_cli.evaluate.benchmark import SetResult, merge_shares
from dfpir_cli.model import DFPIR
from dfpir_cli.restore import precision_check
from dfpir_cli.restore.pipeline import RestoreSummary, merge_summaries
from dfpir_cli.restore.tiling import count_tiles
from dfpir_cli.weights.checkpoint import Checkpoint

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
runner = CliRunner()


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


def running_at() -> torch.dtype:
    """The dtype a CPU matmul of fp32 tensors runs at here: what the autocast around it (if any) makes of it."""
    return (torch.ones(1, 1) @ torch.ones(1, 1)).dtype


@pytest.fixture()
def nan_in_bf16(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """DFPIR's forward gives NaN wherever it runs in bf16 (as the authors' weights do in fp16); the list it returns
    gets the precision of every forward pass."""
    passes: list[torch.dtype] = []
    forward = DFPIR.forward

    def nan_when_bf16(self: DFPIR, image: torch.Tensor, text_code: torch.Tensor) -> torch.Tensor:
        passes.append(running_at())
        output = forward(self, image, text_code)
        return output.fill_(math.nan) if passes[-1] is torch.bfloat16 else output

    monkeypatch.setattr(DFPIR, "forward", nan_when_bf16)
    return passes


class Flaky:
    """A stand-in network: returns its input, NaN for the images whose first pixel is negative on its first call and
    on every call that runs in one of ``nan_in``; records each call's precision and batch."""

    def __init__(self, nan_in: tuple[torch.dtype, ...] = ()) -> None:
        self.nan_in = nan_in
        self.calls: list[tuple[torch.dtype, int]] = []

    def __call__(self, images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        dtype = running_at()
        output = images.clone()
        if not self.calls or dtype in self.nan_in:
            output[images[:, 0, 0, 0] < 0] = math.nan
        self.calls.append((dtype, images.shape[0]))
        return output


def batch() -> torch.Tensor:
    images = torch.rand(4, 3, 8, 8)
    images[[1, 3], 0, 0, 0] = -1.0  # these two come out NaN
    return images


@pytest.mark.parametrize("native,safer", [(True, torch.bfloat16), (False, torch.float32)])
def test_guard_reruns_fp16_in_bf16_where_native_else_fp32(monkeypatch: pytest.MonkeyPatch, native, safer) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    flaky, images = Flaky(), batch()
    guard = FiniteGuard(flaky, torch.float16)
    output = guard(images, torch.zeros(4, 2))
    torch.testing.assert_close(output, images)  # finite, and the re-run images are where they were
    assert flaky.calls == [(torch.float32, 4), (safer, 2)]  # only the two non-finite images ran again
    name = "bf16" if native else "fp32"
    assert guard.reruns == Reruns({f"fp16->{name}": 2})
    assert guard.reruns.notes() == [f"2 tiles gave non-finite output in fp16 and were re-run in {name}"]


def test_guard_reruns_bf16_in_fp32_and_goes_on_from_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    images = batch()
    flaky = Flaky(nan_in=(torch.bfloat16,))
    guard = FiniteGuard(flaky, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the caller's autocast, as restore enters it
        output = guard(images, torch.zeros(4, 2))
    torch.testing.assert_close(output, images)
    assert flaky.calls == [(torch.bfloat16, 4), (torch.float32, 2)]  # fp32 inside the caller's bf16 autocast
    assert guard.reruns == Reruns({"bf16->fp32": 2})

    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    flaky = Flaky(nan_in=(torch.bfloat16,))  # fp16 -> bf16, still NaN -> fp32
    guard = FiniteGuard(flaky, torch.float16)
    torch.testing.assert_close(guard(images, torch.zeros(4, 2)), images)
    assert flaky.calls == [(torch.float32, 4), (torch.bfloat16, 2), (torch.float32, 2)]
    assert guard.reruns.steps == {"fp16->bf16": 2, "bf16->fp32": 2}
    assert guard.reruns.notes()[1] == "2 tiles gave non-finite output in bf16 and were re-run in fp32"


def test_guard_records_what_fp32_cannot_fix_and_leaves_finite_passes_alone() -> None:
    images, flaky = batch(), Flaky()
    reruns = Reruns()
    output = FiniteGuard(flaky, torch.float32, reruns)(images, torch.zeros(4, 2))
    assert flaky.calls == [(torch.float32, 4)]  # nothing safer than fp32: not run again
    assert reruns == Reruns(nonfinite=2) and torch.isnan(output[[1, 3]]).all() and torch.isfinite(output[[0, 2]]).all()
    assert reruns.notes() == ["2 tiles gave non-finite output even in fp32: their NaN pixels came out black (0)"]
    reruns.add(Reruns({"fp16->bf16": 1}, 1))
    assert reruns == Reruns({"fp16->bf16": 1}, 3)

    finite = torch.rand(4, 3, 8, 8)
    guard = FiniteGuard(lambda images, codes: images, torch.float16)
    assert guard(finite, torch.zeros(4, 2)) is finite and guard.reruns == Reruns()  # the output itself
    flaky = Flaky()
    FiniteGuard(flaky, torch.bfloat16, reruns)(finite, torch.zeros(4, 2))
    assert len(flaky.calls) == 1 and reruns == Reruns({"fp16->bf16": 1}, 3)  # one pass, nothing counted


def test_auto_on_cuda_takes_bf16_where_ampere_or_newer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pre-Ampere GPUs only emulate bf16 (recent PyTorch's is_bf16_supported() says True there): fp32 for auto."""
    capability = [(8, 0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[0])
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(precision_check, "bf16_agreement", lambda checkpoint, device, measuring=None: 50.0)
    assert native_bf16(CUDA) and resolve_precision("auto", CUDA) == (torch.bfloat16, "")
    assert precision_check.inference_precision(micro(), CUDA, "auto").dtype is torch.bfloat16
    assert resolve_precision("fp16", CUDA) == (torch.float16, "")  # forced: as asked, re-run in bf16 when not finite
    assert safer_precision(torch.float16, CUDA) is torch.bfloat16
    capability[0] = (7, 5)  # Turing: bf16 emulated
    assert not native_bf16(CUDA) and resolve_precision("auto", CUDA) == (torch.float32, "")
    assert precision_check.inference_precision(micro(), CUDA, "auto") == precision_check.Choice(torch.float32)
    assert safer_precision(torch.float16, CUDA) is torch.float32
    assert safer_precision(torch.bfloat16, CUDA) is torch.float32 and safer_precision(torch.float32, CUDA) is None


def test_the_bf16_check_measures_the_raw_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                nan_in_bf16: list[torch.dtype]) -> None:
    """A checkpoint whose bf16 output is not finite fails the check (no re-run hides it): auto runs fp32."""
    monkeypatch.setenv(precision_check.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(precision_check, "native_bf16", lambda device: True)
    assert precision_check.measure_bf16_agreement(micro(), CPU, size=32) == precision_check.NONFINITE_DB
    choice = precision_check.inference_precision(micro(), CPU, "auto")
    assert choice.dtype is torch.float32 and "not finite" in choice.note


def test_restore_reruns_nonfinite_tiles_and_says_so(tmp_path: Path, micro_checkpoint: Path,
                                                    nan_in_bf16: list[torch.dtype]) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    tiles = count_tiles(40, 56, 32, 8)
    base = ["restore", str(tmp_path / "a.png"), "-d", "noise25", "-w", str(micro_checkpoint), "--device", "cpu",
            "--tile", "32", "--tile-overlap", "8"]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "fp32"), "--precision", "fp32", "--json"])
    plain = json.loads(result.stdout)
    assert result.exit_code == 0 and plain["precision_reruns"] == {} and plain["nonfinite_tiles"] == 0
    assert nan_in_bf16 == [torch.float32] * tiles  # a finite pass runs once

    nan_in_bf16.clear()
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "bf16"), "--precision", "bf16", "--json"])
    summary = json.loads(result.stdout)
    assert result.exit_code == 0 and summary["precision"] == "bf16"
    assert summary["precision_reruns"] == {"bf16->fp32": tiles} and summary["nonfinite_tiles"] == 0
    assert f"{tiles} tiles gave non-finite output in bf16 and were re-run in fp32" in summary["notes"]
    assert nan_in_bf16 == [torch.bfloat16, torch.float32] * tiles  # batch size 1 on CPU: each tile again
    rerun = np.asarray(Image.open(tmp_path / "bf16" / "a.png"))
    np.testing.assert_array_equal(rerun, np.asarray(Image.open(tmp_path / "fp32" / "a.png")))  # fp32's image

    result = runner.invoke(app, [*base, "-o", str(tmp_path / "bf16"), "--precision", "bf16", "--overwrite"])
    assert result.exit_code == 0 and "were re-run in fp32" in " ".join(result.output.split())


def test_restore_notes_what_fp32_cannot_fix(tmp_path: Path, micro_checkpoint: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    forward = DFPIR.forward

    def nan_on_the_left(self: DFPIR, image: torch.Tensor, text_code: torch.Tensor) -> torch.Tensor:
        output = forward(self, image, text_code)
        output[..., :4] = math.nan
        return output

    monkeypatch.setattr(DFPIR, "forward", nan_on_the_left)
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(tmp_path / "a.png")
    result = runner.invoke(app, ["restore", str(tmp_path / "a.png"), "-d", "noise25", "-w", str(micro_checkpoint),
                                 "--device", "cpu", "--precision", "fp32", "--tile", "0", "-o", str(tmp_path / "out"),
                                 "--json"])
    summary = json.loads(result.stdout)
    note = "1 tile gave non-finite output even in fp32: its NaN pixels came out black (0)"
    assert result.exit_code == 0 and summary["nonfinite_tiles"] == 1 and summary["precision_reruns"] == {}
    assert note in summary["notes"] and summary["files"][0]["reason"] == note  # which file it was
    written = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert (written[:, :4] == 0).all() and written[:, 4:].mean() > 0


def test_eval_reruns_nonfinite_tiles_and_reports_them(micro_checkpoint: Path, nan_in_bf16: list[torch.dtype]) -> None:
    base = ["eval", "-d", "synthetic", "--size", "32", "-g", "noise25", "-w", str(micro_checkpoint), "--device", "cpu",
            "--tile", "16", "--overlap", "4"]
    plain = json.loads(runner.invoke(app, [*base, "--precision", "fp32", "--json"]).stdout)
    assert plain["precision_reruns"] == {} and plain["notes"] == []
    result = runner.invoke(app, [*base, "--precision", "bf16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    reruns = {"bf16->fp32": 5 * count_tiles(32, 32, 16, 4)}  # five benchmark photos
    assert report["precision_reruns"] == reruns and report["sets"][0]["precision_reruns"] == reruns
    assert report["notes"] == [f"{reruns['bf16->fp32']} tiles gave non-finite output in bf16 and were re-run in fp32"]
    assert report["sets"][0]["psnr"] == pytest.approx(plain["sets"][0]["psnr"], abs=1e-9)
    result = runner.invoke(app, [*base, "--precision", "bf16"])
    assert result.exit_code == 0 and "were re-run in fp32" in " ".join(result.output.split())


def test_shares_add_up_their_reruns() -> None:
    """torchrun: each process counts its own; the merged summary and eval report say the sum, once."""
    first, second = Reruns({"bf16->fp32": 2}), Reruns({"bf16->fp32": 3}, 1)
    parts = [RestoreSummary(reruns=first, notes=["a note", *first.notes()]),
             RestoreSummary(reruns=second, notes=["a note", *second.notes()])]
    merged = merge_summaries(parts, [])
    assert merged.reruns == Reruns({"bf16->fp32": 5}, 1)
    assert merged.notes == ["a note", "5 tiles gave non-finite output in bf16 and were re-run in fp32",
                            "1 tile gave non-finite output even in fp32: its NaN pixels came out black (0)"]
    test_set = TestSet("synthetic", "noise25", (), "synthetic")
    (result,) = merge_shares([[SetResult(test_set, reruns=first)], [SetResult(test_set, reruns=second)]])
    assert result.reruns == Reruns({"bf16->fp32": 5}, 1)
