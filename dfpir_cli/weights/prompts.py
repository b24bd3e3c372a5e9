"""Degradation vocabulary and the CLIP text encoder that turns prompts into DFPIR's 512-d codes.

DESIGN.md section 3: the published checkpoints were trained with CLIP ViT-B/32 (OpenAI) ``encode_text``
codes, float32 and not normalised. A checkpoint carries the codes of its own vocabulary, so restoring
with a known degradation name never needs CLIP; CLIP is needed only for new free-text prompts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch

from ..errors import ClipUnavailableError, UnknownDegradationError


@dataclass(frozen=True)
class Degradation:
    name: str  # canonical name, as checkpoints and options use it
    family: str  # noise, rain, haze, blur or lowlight
    text: str  # the prompt of the 5-task and 3-task "detailed" checkpoints
    simple_text: str | None  # the prompt of the 3-task "simple" checkpoint (None: 5-task only)
    aliases: tuple[str, ...] = ()  # other names users may type


DEGRADATIONS: dict[str, Degradation] = {d.name: d for d in (
    Degradation("noise15", "noise", "Gaussian noise with a standard deviation of 15", "Noise", ("sigma15",)),
    Degradation("noise25", "noise", "Gaussian noise with a standard deviation of 25", "Noise",
                ("noise", "noisy", "sigma25", "denoise")),
    Degradation("noise50", "noise", "Gaussian noise with a standard deviation of 50", "Noise",
                ("sigma50", "very-noisy")),
    # Not one of the paper's: real photos' camera noise under a prompt of its own, so that the Gaussian noise
    # prompts stay what the paper trained (issue 32; the shipped default model's runs with its own decoder:
    # docs/default-model.md).
    Degradation("camnoise", "noise", "Camera noise of a real photo", None,
                ("camera-noise", "camera_noise", "real-noise", "real_noise", "sensor-noise")),
    Degradation("rain", "rain", "Rain degradation with rain lines", "Rain", ("rainy", "derain")),
    Degradation("haze", "haze", "Hazy degradation with normal haze", "Haze", ("hazy", "dehaze", "fog", "foggy")),
    Degradation("blur", "blur", "Blur degradation with motion blur", None,
                ("blurry", "motion-blur", "motion_blur", "deblur")),
    Degradation("lowlight", "lowlight", "Lowlight degradation", None,
                ("dark", "low-light", "low_light", "lol")),
)}

THREE_TASK: tuple[str, ...] = ("noise15", "noise25", "noise50", "rain", "haze")
FIVE_TASK: tuple[str, ...] = THREE_TASK + ("blur", "lowlight")
TASK_SETS: dict[int, tuple[str, ...]] = {3: THREE_TASK, 5: FIVE_TASK}

PromptStyle = Literal["five-task", "three-task", "three-task-simple"]
PROMPT_STYLES: tuple[str, ...] = ("five-task", "three-task", "three-task-simple")


def _alias_table() -> dict[str, str]:
    table = {}
    for degradation in DEGRADATIONS.values():
        for key in (degradation.name, *degradation.aliases):
            table[key.lower()] = degradation.name
    return table


_ALIASES = _alias_table()


def known_names_help() -> str:
    """One line per degradation: its name and aliases, for error messages and --help."""
    return "\n".join(f"  {d.name}: {', '.join(d.aliases) or '-'}" for d in DEGRADATIONS.values())


def resolve_degradation(name: str) -> str:
    """Map a user-typed name or alias to the canonical degradation name."""
    canonical = _ALIASES.get(name.strip().lower())
    if canonical is None:
        raise UnknownDegradationError(
            f"unknown degradation {name!r}. Known names (and their aliases):\n{known_names_help()}")
    return canonical


def family_of(prompt: str | None) -> str | None:
    """The family (noise, rain, haze, blur, lowlight) of a prompt name or alias; None for free text."""
    if not prompt:
        return None
    canonical = _ALIASES.get(prompt.strip().lower())
    return DEGRADATIONS[canonical].family if canonical else None


def vocabulary(style: PromptStyle) -> dict[str, str]:
    """The degradation names and prompt texts a published checkpoint of this style was trained with."""
    if style == "five-task":
        return {name: DEGRADATIONS[name].text for name in FIVE_TASK}
    if style == "three-task":
        return {name: DEGRADATIONS[name].text for name in THREE_TASK}
    if style == "three-task-simple":
        return {name: DEGRADATIONS[name].simple_text or "" for name in THREE_TASK}
    raise UnknownDegradationError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")


# Where open_clip's ViT-B-32 "openai" weights live on the Hugging Face Hub, in the order open_clip tries them.
CLIP_MODEL = "ViT-B-32"
CLIP_PRETRAINED = "openai"
CLIP_HF_REPO = "timm/vit_base_patch32_clip_224.openai"
CLIP_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_WEIGHTS_ENV = "DFPIR_CLIP_WEIGHTS"


def find_clip_weights(cache_dir: str | Path | None = None) -> Path | None:
    """The local CLIP weights file, without touching the network: $DFPIR_CLIP_WEIGHTS, then the HF cache."""
    explicit = os.environ.get(CLIP_WEIGHTS_ENV)
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    from huggingface_hub import try_to_load_from_cache

    for filename in CLIP_FILENAMES:
        cached = try_to_load_from_cache(CLIP_HF_REPO, filename, cache_dir=cache_dir)
        if isinstance(cached, str):
            return Path(cached)
    return None


class ClipTextEncoder:
    """CLIP ViT-B/32 text tower (open_clip) that maps prompt texts to (N, 512) float32 codes.

    Build it with :meth:`load` (local weights only, never the network) or wrap any open_clip model
    with ``ClipTextEncoder(model)``, which tests use with randomly initialised weights.
    """

    def __init__(self, model: torch.nn.Module, tokenizer=None) -> None:
        import open_clip

        self.model = model.eval()
        self.tokenizer = tokenizer or open_clip.get_tokenizer(CLIP_MODEL)

    @classmethod
    def load(cls, weights: str | Path | None = None, device: str | torch.device = "cpu") -> ClipTextEncoder:
        """Load the OpenAI weights from ``weights`` or the local cache; fail clearly if they are absent."""
        try:
            import open_clip
        except ImportError as error:  # pragma: no cover - a dependency, but keep the message useful
            raise ClipUnavailableError(f"open_clip is not installed ({error}); pip install open_clip_torch") from error
        path = Path(weights) if weights else find_clip_weights()
        if path is None or not path.is_file():
            where = f"{weights} does not exist" if weights else "they are not in the local Hugging Face cache"
            raise ClipUnavailableError(
                f"CLIP ViT-B/32 (OpenAI) weights are needed to encode a prompt text, but {where}. "
                "Run `dfpir fetch-weights --clip` once on a machine with network access (it fills the cache), "
                f"or point ${CLIP_WEIGHTS_ENV} at an open_clip ViT-B-32 weights file. Restoring with a "
                "degradation name (--degradation) needs no CLIP.")
        model = open_clip.create_model(CLIP_MODEL, pretrained=str(path), device=device)
        return cls(model)

    @torch.no_grad()
    def encode(self, texts: list[str] | tuple[str, ...]) -> torch.Tensor:
        """Codes of ``texts``: ``encode_text`` output, float32, not normalised (as DFPIR was trained)."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(texts)).to(device)
        # an open_clip model method; nn.Module's typing cannot see it
        encode_text = cast(Callable[[torch.Tensor], torch.Tensor], self.model.encode_text)
        return encode_text(tokens).float().cpu()


def random_codes(names: tuple[str, ...] | list[str], seed: int = 0, dim: int = 512) -> torch.Tensor:
    """Seeded random prompt codes, one per name: a legitimate stand-in for CLIP codes in DFPIR.

    The DGM never trains (DESIGN.md section 2), so any distinct codes give distinct channel orders.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(len(names), dim, generator=generator)
