"""The detector network: a small CNN over native-resolution crops and a whole-image thumbnail."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from einops import rearrange
from torch import nn

FAMILIES: tuple[str, ...] = ("noise", "rain", "haze", "blur", "lowlight")  # the order of the network's outputs


@dataclass(frozen=True)
class DetectorConfig:
    crop: int = 64  # side of each native-resolution crop (noise, streaks and blur show at the pixel level)
    crops: int = 8  # crops per image (a grid at inference, random in training)
    thumbnail: int = 64  # side of the whole-image thumbnail (haze and darkness are global)
    width: int = 32  # channels of each branch's middle layers
    hidden: int = 64  # width of the classifier's hidden layer
    families: tuple[str, ...] = FAMILIES  # one output per family; order fixed by the checkpoint

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DetectorConfig:
        """Build from a config.json's ``config``; a value of the wrong type or range raises ValueError naming it."""
        if not isinstance(values, dict):
            raise ValueError(f"the detector config is a JSON object of fields, not {type(values).__name__}")
        known = {key: values[key] for key in cls.__dataclass_fields__ if key in values}
        for key, value in known.items():
            if key != "families" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive whole number, not {value!r}")
        if "families" in known:
            families = known["families"]
            if (not isinstance(families, list | tuple) or not families or len(set(families)) != len(families)
                    or any(family not in FAMILIES for family in families)):
                raise ValueError(f"families must be a list of distinct names among {', '.join(FAMILIES)}, "
                                 f"not {families!r}")
            known["families"] = tuple(families)
        return cls(**known)


def _conv(inputs: int, outputs: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True)]


def _branch(width: int) -> nn.Sequential:
    """Five 3x3 convolutions, three of them strided (the first sees every pixel: noise is per pixel)."""
    return nn.Sequential(*_conv(3, width // 2), *_conv(width // 2, width, 2), *_conv(width, width, 2),
                         *_conv(width, 2 * width, 2), *_conv(2 * width, 2 * width))


def _pool(features: torch.Tensor) -> torch.Tensor:
    return torch.cat((features.mean(dim=(2, 3)), features.amax(dim=(2, 3))), dim=1)


class DetectorNet(nn.Module):
    """Scores each degradation family independently (a photo may have two) and regresses the noise level.

    ``forward(crops, thumbnail)`` takes (B, K, 3, crop, crop) native-resolution crops and a (B, 3, T, T)
    thumbnail in [0, 1] and returns (B, families) logits and (B,) log noise sigma (8-bit scale).
    """

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.local = _branch(width)
        self.glob = _branch(width)
        self.head = nn.Sequential(nn.Linear(8 * width + 4 * width, config.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(config.hidden, len(config.families) + 1))

    def forward(self, crops: torch.Tensor, thumbnail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = crops.shape[0]
        local = _pool(self.local(rearrange(crops, "b k c h w -> (b k) c h w") - 0.5))
        local = rearrange(local, "(b k) f -> b k f", b=batch)
        local = torch.cat((local.mean(dim=1), local.amax(dim=1)), dim=1)  # mean: everywhere; max: anywhere
        whole = _pool(self.glob(thumbnail - 0.5))
        out = self.head(torch.cat((local, whole), dim=1))
        return out[:, :-1], out[:, -1]
