"""The Restormer backbone (Zamir et al., CVPR 2022) as DFPIR uses it.

Attribute names follow the reference implementation, since they are the checkpoint format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class _WithBiasNorm(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Biased variance and eps 1e-5, as the reference; F.layer_norm computes exactly this, fused.
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, eps=1e-5)


class _BiasFreeNorm(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference divides by the standard deviation without subtracting the mean.
        variance = x.var(-1, keepdim=True, unbiased=False)
        return x * torch.rsqrt(variance + 1e-5) * self.weight


class LayerNorm(nn.Module):
    """Per-pixel LayerNorm over the channels of a (B, C, H, W) map."""

    def __init__(self, channels: int, layernorm_type: str) -> None:
        super().__init__()
        self.body = _BiasFreeNorm(channels) if layernorm_type == "BiasFree" else _WithBiasNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalising over the last axis of the channels-last view needs no copy when x is channels-last.
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                      heads: int, keep: int | None = None) -> torch.Tensor:
    """Transposed (channel) attention of Restormer's MDTA and DFPIR's CAAPM.

    q, k, v are (B, C, H, W); attention runs across the C/heads channels of each head, with q and k
    L2-normalised along the pixels. With ``keep``, only the ``keep`` largest logits of each row survive
    (the top-k sparsification of CAAPM, DFPIR section 3.3).
    """
    height, width = q.shape[-2:]
    q, k, v = (rearrange(t, "b (head c) h w -> b head c (h w)", head=heads) for t in (q, k, v))
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    logits = (q @ k.transpose(-2, -1)) * temperature
    if keep is not None and keep < logits.shape[-1]:
        kept = torch.topk(logits, k=keep, dim=-1).indices
        mask = torch.full_like(logits, float("-inf")).scatter_(-1, kept, 0.0)
        logits = logits + mask
    out = logits.softmax(dim=-1) @ v
    return rearrange(out, "b head c (h w) -> b (head c) h w", h=height, w=width)


class Attention(nn.Module):
    """MDTA: multi-Dconv head transposed attention."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        return self.project_out(channel_attention(q, k, v, self.temperature, self.heads))


class FeedForward(nn.Module):
    """GDFN: gated depthwise-conv feed-forward network."""

    def __init__(self, dim: int, expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion_factor: float, bias: bool, layernorm_type: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, layernorm_type)
        self.attn = Attention(dim, heads, bias)
        self.norm2 = LayerNorm(dim, layernorm_type)
        self.ffn = FeedForward(dim, expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution, double the channels: conv to C/2, then PixelUnshuffle(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: conv to 2C, then PixelShuffle(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def transformer_level(dim: int, count: int, heads: int, expansion_factor: float, bias: bool,
                      layernorm_type: str) -> nn.Sequential:
    return nn.Sequential(*(TransformerBlock(dim, heads, expansion_factor, bias, layernorm_type) for _ in range(count)))
