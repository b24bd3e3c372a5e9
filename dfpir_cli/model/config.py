"""The one configuration object of the DFPIR network, and its named presets."""

from __future__ import annotations

import math
import reprlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

ChannelPerturbation = Literal["shuffle", "attention", "none"]

# Far beyond any DFPIR (the paper's widest layer has 1,021 channels, its deepest level 8 blocks), so a corrupt
# config is refused at once instead of describing a network that takes minutes, or terabytes, to build.
MAX_WIDTH = 1 << 16
MAX_BLOCKS = 64


@dataclass(frozen=True)
class DFPIRConfig:
    """Shape of the network and the ablation switches of the paper's Table 3.

    The defaults are the paper model (DESIGN.md section 2). With ``channel_perturbation="none"`` and
    ``caapm=False`` the DGPBs vanish and the network is the plain Restormer baseline.
    """

    dim: int = 48  # channels of encoder level 1; level k has dim * 2**(k-1)
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)  # transformer blocks per level, latent last
    num_refinement_blocks: int = 4  # blocks after decoder level 1, at 2 * dim channels
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)  # attention heads per level
    ffn_expansion_factor: float = 2.66  # GDFN hidden width = int(dim * factor)
    bias: bool = False  # biases in the backbone's convolutions
    layernorm_type: Literal["WithBias", "BiasFree"] = "WithBias"  # Restormer's two LayerNorms
    text_dim: int = 512  # width of the prompt code (CLIP ViT-B/32 text embedding)
    in_channels: int = 3  # image channels in
    out_channels: int = 3  # image channels out (global residual needs in == out)
    channel_perturbation: ChannelPerturbation = "shuffle"  # DGCPM ("shuffle"), channel attention, or off
    caapm: bool = True  # the attention perturbation (CAAPM) in each DGPB
    gamma: float = 0.9  # fraction of attention entries CAAPM keeps per row (top-k)

    def __post_init__(self) -> None:
        # JSON gives lists; the config is hashable and frozen only with tuples.
        object.__setattr__(self, "num_blocks", tuple(self.num_blocks))
        object.__setattr__(self, "heads", tuple(self.heads))
        if len(self.num_blocks) != 4 or len(self.heads) != 4:
            raise ValueError("num_blocks and heads need 4 entries: levels 1-3 and the latent")
        blocks = {"num_refinement_blocks": self.num_refinement_blocks,
                  **{f"num_blocks[{level}]": count for level, count in enumerate(self.num_blocks)}}
        counts = {"dim": self.dim, "text_dim": self.text_dim, "in_channels": self.in_channels,
                  "out_channels": self.out_channels, **blocks,
                  **{f"heads[{level}]": count for level, count in enumerate(self.heads)}}
        for name, count in counts.items():
            if count < 1:
                raise ValueError(f"{name} must be at least 1, not {count}")
        for name, count in blocks.items():
            if count > MAX_BLOCKS:
                raise ValueError(f"{name} must be at most {MAX_BLOCKS}, not {count}")
        if self.dim % 2:
            raise ValueError(f"dim must be even (each downsampling halves the channels, then unshuffles 2x2), not {self.dim}")
        if self.in_channels != self.out_channels:
            raise ValueError(f"in_channels {self.in_channels} and out_channels {self.out_channels} differ: the output "
                             "adds the input (global residual)")
        if not (math.isfinite(self.ffn_expansion_factor) and self.ffn_expansion_factor > 0):
            raise ValueError(f"ffn_expansion_factor must be a positive number, not {self.ffn_expansion_factor}")
        if int(self.dim * self.ffn_expansion_factor) < 1:
            raise ValueError(f"ffn_expansion_factor {self.ffn_expansion_factor} leaves level 1's GDFN no hidden channel")
        widest = max(int(self.dim * 8 * max(self.ffn_expansion_factor, 1.0)), self.text_dim, self.in_channels)
        if widest > MAX_WIDTH:
            raise ValueError(f"this config has a layer {widest} channels wide (dim {self.dim}, ffn_expansion_factor "
                             f"{self.ffn_expansion_factor}, text_dim {self.text_dim}, in_channels {self.in_channels}); "
                             f"at most {MAX_WIDTH} are allowed")
        for level, head_count in enumerate(self.heads):
            if (self.dim * 2**level) % head_count:
                raise ValueError(f"level {level + 1} width {self.dim * 2**level} is not divisible by {head_count} heads")
        if self.channel_perturbation not in ("shuffle", "attention", "none"):
            raise ValueError(f"channel_perturbation must be shuffle, attention or none, not {self.channel_perturbation!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], not {self.gamma}")
        if self.layernorm_type not in ("WithBias", "BiasFree"):
            raise ValueError(f"layernorm_type must be WithBias or BiasFree, not {self.layernorm_type!r}")

    @property
    def has_dgpb(self) -> bool:
        """False for the Restormer baseline: no perturbation block at all."""
        return self.channel_perturbation != "none" or self.caapm

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DFPIRConfig:
        """Build from a dict (JSON), also from the reference code's keyword names (``LayerNorm_type``).

        Each value's type is checked before the network's rules run: JSON's ``true`` is not a width, ``"4"`` is
        not a count and ``null`` is not the default, so a corrupt or hand-edited config fails naming its field.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a network config is a JSON object of fields, not {type(data).__name__}")
        data = dict(data)
        if "LayerNorm_type" in data:
            data["layernorm_type"] = data.pop("LayerNorm_type")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        for name, value in data.items():
            expected = _json_type_wanted(getattr(cls, name), value)
            if expected:
                raise ValueError(f"{name} must be {expected}, not {reprlib.repr(value)}")
        return cls(**data)


def _json_type_wanted(default: Any, value: Any) -> str | None:
    """What ``value`` should be when its type is not that of the field's default (the defaults are the paper
    model, so every field has one); None when it is. A bool is not a count, though Python's bool is an int."""
    def whole(item: Any) -> bool:
        return type(item) is int

    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if whole(value) else "a whole number"
    if isinstance(default, float):
        return None if type(value) in (int, float) and math.isfinite(value) else "a finite number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, tuple):
        fits = isinstance(value, (list, tuple)) and len(value) == len(default) and all(map(whole, value))
        return None if fits else f"a list of {len(default)} whole numbers"
    return None


PRESETS: dict[str, DFPIRConfig] = {
    # The model of the paper and of the published checkpoints: 31,104,761 parameters.
    "paper": DFPIRConfig(),
    # A quarter of the width and fewer blocks: about 2.5 M parameters, usable on a laptop CPU.
    "small": DFPIRConfig(dim=16, num_blocks=(2, 2, 2, 4), num_refinement_blocks=2),
    # Tiny, for tests and smoke runs.
    "tiny": DFPIRConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1),
    # The paper's ablation baseline: Restormer with no perturbation block.
    "restormer": DFPIRConfig(channel_perturbation="none", caapm=False),
}
