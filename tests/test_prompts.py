"""The degradation vocabulary, aliases, and the CLIP text encoder's behaviour without weights."""

from __future__ import annotations

import time

import pytest
import torch

from dfpir_cli.errors import ClipUnavailableError, UnknownDegradationError
from dfpir_cli.weights.prompts import (
    DEGRADATIONS,
    FIVE_TASK,
    THREE_TASK,
    ClipTextEncoder,
    random_codes,
    resolve_degradation,
    vocabulary,
)


@pytest.mark.parametrize("typed,canonical", [("hazy", "haze"), ("Rainy", "rain"), ("noisy", "noise25"),
                                             ("blurry", "blur"), ("dark", "lowlight"), ("low-light", "lowlight"),
                                             ("noise50", "noise50"), (" haze ", "haze")])
def test_names_and_aliases_resolve(typed, canonical):
    assert resolve_degradation(typed) == canonical


def test_unknown_name_lists_names_and_aliases():
    with pytest.raises(UnknownDegradationError) as info:
        resolve_degradation("snowy")
    message = str(info.value)
    assert "'snowy'" in message
    for degradation in DEGRADATIONS.values():
        assert degradation.name in message and all(alias in message for alias in degradation.aliases)


def test_vocabularies_hold_the_papers_texts():
    five = vocabulary("five-task")
    assert tuple(five) == FIVE_TASK
    assert five["noise15"] == "Gaussian noise with a standard deviation of 15"
    assert five["rain"] == "Rain degradation with rain lines"
    assert five["haze"] == "Hazy degradation with normal haze"
    assert five["blur"] == "Blur degradation with motion blur"
    assert five["lowlight"] == "Lowlight degradation"
    assert tuple(vocabulary("three-task")) == THREE_TASK
    assert vocabulary("three-task-simple") == {"noise15": "Noise", "noise25": "Noise", "noise50": "Noise",
                                              "rain": "Rain", "haze": "Haze"}
    with pytest.raises(UnknownDegradationError, match="prompt style"):
        vocabulary("four-task")


def test_random_codes_are_seeded_and_distinct():
    codes = random_codes(FIVE_TASK, seed=3)
    assert codes.shape == (7, 512) and codes.dtype == torch.float32
    assert torch.equal(codes, random_codes(FIVE_TASK, seed=3))
    assert not torch.equal(codes, random_codes(FIVE_TASK, seed=4))
    assert torch.cdist(codes, codes).fill_diagonal_(1.0).min() > 0


def test_clip_without_weights_fails_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DFPIR_CLIP_WEIGHTS", str(tmp_path / "missing.safetensors"))
    start = time.monotonic()
    with pytest.raises(ClipUnavailableError, match="dfpir fetch-weights --clip"):
        ClipTextEncoder.load()
    with pytest.raises(ClipUnavailableError, match="does not exist"):
        ClipTextEncoder.load(tmp_path / "nope.bin")
    assert time.monotonic() - start < 5


def test_clip_encoder_gives_float32_512_codes():
    import open_clip

    torch.manual_seed(0)
    encoder = ClipTextEncoder(open_clip.create_model("ViT-B-32", pretrained=None))
    codes = encoder.encode(["Rain degradation with rain lines", "Lowlight degradation"])
    assert codes.shape == (2, 512) and codes.dtype == torch.float32
    assert not torch.allclose(codes[0], codes[1])
    # not normalised: DFPIR was trained on raw encode_text output
    assert not torch.allclose(codes.norm(dim=1), torch.ones(2))
