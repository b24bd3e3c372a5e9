"""The one configuration object of the DFPIR network, and its named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

ChannelPerturbation = Literal["shuffle", "attention", "none"]


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
        """Build from a dict, also from the reference code's keyword names (``LayerNorm_type``)."""
        data = dict(data)
        if "LayerNorm_type" in data:
            data["layernorm_type"] = data.pop("LayerNorm_type")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


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
