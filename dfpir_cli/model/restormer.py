"""The Restormer backbone (Zamir et al., CVPR 2022) as DFPIR uses it.

Attribute names follow the reference implementation, since they are the checkpoint format.

Feature maps travel in channels-last memory format: a (B, C, H, W) tensor whose memory is a row of C
channels per pixel. In that layout a 1x1 convolution is one matrix product over the pixel rows, the
depthwise 3x3 convolutions and the per-pixel LayerNorm run several times faster than in NCHW, and the
channel attention reads q, k and v where the depthwise convolution wrote them, without copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C): a view when ``x`` is channels-last, a copy otherwise."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def from_pixel_rows(rows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) -> a channels-last (B, C, H, W) view of the same memory."""
    return rows.view(rows.shape[0], height, width, rows.shape[-1]).permute(0, 3, 1, 2)


def pointwise(conv: nn.Conv2d, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(x) + residual`` for a 1x1 convolution: one GEMM over the pixel rows, which adds the residual."""
    if residual is None:
        return conv(x)
    batch, channels, height, width = x.shape
    weight = conv.weight.view(conv.out_channels, channels)
    out = torch.addmm(pixel_rows(residual).reshape(-1, conv.out_channels), pixel_rows(x).reshape(-1, channels),
                      weight.t())
    if conv.bias is not None:
        out = out + conv.bias
    return from_pixel_rows(out.view(batch, -1, conv.out_channels), height, width)


def _gelu_gate(gate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """GDFN's ``gelu(gate) * value``; without autograd, in the gate's own memory (no new buffers)."""
    if torch.is_grad_enabled() and (gate.requires_grad or value.requires_grad):
        return F.gelu(gate) * value
    return torch.ops.aten.gelu_(gate).mul_(value)


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
        # The channels are the last axis of the channels-last view: no copy when x is channels-last, and
        # the result is channels-last in any case.
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def channel_attention_map(q: torch.Tensor, k: torch.Tensor, temperature: torch.Tensor, heads: int,
                          keep: int | None = None, norms: torch.Tensor | None = None) -> torch.Tensor:
    """The transposed (channel) attention maps of Restormer's MDTA and DFPIR's CAAPM: (B, heads, c, c).

    q and k are pixel rows (B, H*W, C), c = C / heads. Per head, ``softmax(q_n @ k_n^T * temperature)``,
    with q_n, k_n the rows of q^T, k^T L2-normalised along the pixels. With ``keep``, only the ``keep``
    largest logits of each row survive (CAAPM's top-k, DFPIR section 3.3). ``norms`` (B, 2C) are the L2
    norms along the pixels of q's, then k's channels, for a caller that can get both in one pass.
    """
    batch, _, channels = q.shape
    width = channels // heads
    if norms is None:
        norms = torch.cat([torch.linalg.vector_norm(q, dim=1), torch.linalg.vector_norm(k, dim=1)], dim=1)
    # Normalising q and k is dividing the logits by the outer product of their norms (F.normalize's eps).
    q_norm, k_norm = norms.clamp_min(1e-12).chunk(2, dim=1)
    q_norm, k_norm = q_norm.view(batch, heads, width, 1), k_norm.view(batch, heads, 1, width)
    q_heads = q.view(batch, -1, heads, width).permute(0, 2, 3, 1)  # (B, head, c, HW)
    k_heads = k.view(batch, -1, heads, width).transpose(1, 2)  # (B, head, HW, c)
    logits = (q_heads @ k_heads) * (temperature / (q_norm * k_norm))
    if keep is not None and keep < width:
        kept = torch.topk(logits, k=keep, dim=-1).indices
        mask = torch.full_like(logits, float("-inf")).scatter_(-1, kept, 0.0)
        logits = logits + mask
    return logits.softmax(dim=-1)


def attend(attention: torch.Tensor, v: torch.Tensor, project_out: nn.Conv2d, height: int, width: int,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``project_out(attention @ v) (+ residual)`` as one GEMM over the pixel rows of v (B, H*W, C).

    With A the block-diagonal (C, C) matrix of the heads' maps, the output rows are
    ``v @ A^T @ W_out^T``: the small product ``A^T @ W_out^T`` (head by head, no zero blocks) is formed
    first, so the attention output before the projection is never built.
    """
    batch, heads, head_width, _ = attention.shape
    weight_t = project_out.weight.view(project_out.out_channels, -1).t().reshape(heads, head_width, -1)
    mixed = (attention.transpose(-1, -2) @ weight_t).reshape(batch, heads * head_width, -1)
    if residual is None:
        out = torch.bmm(v, mixed)
    else:
        out = torch.baddbmm(pixel_rows(residual), v, mixed)
    if project_out.bias is not None:
        out = out + project_out.bias
    return from_pixel_rows(out, height, width)


class Attention(nn.Module):
    """MDTA: multi-Dconv head transposed attention."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``project_out(attention(x)) (+ residual)``."""
        qk, v = pixel_rows(self.qkv_dwconv(self.qkv(x))).split([2 * x.shape[1], x.shape[1]], dim=-1)
        norms = torch.linalg.vector_norm(qk, dim=1)  # q and k side by side: one pass for both
        attention = channel_attention_map(*qk.chunk(2, dim=-1), self.temperature, self.heads, norms=norms)
        return attend(attention, v, self.project_out, *x.shape[-2:], residual=residual)


class FeedForward(nn.Module):
    """GDFN: gated depthwise-conv feed-forward network."""

    def __init__(self, dim: int, expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``project_out(gelu(x1) * x2) (+ residual)``."""
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return pointwise(self.project_out, _gelu_gate(gate, value), residual)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion_factor: float, bias: bool, layernorm_type: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, layernorm_type)
        self.attn = Attention(dim, heads, bias)
        self.norm2 = LayerNorm(dim, layernorm_type)
        self.ffn = FeedForward(dim, expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x), residual=x)
        return self.ffn(self.norm2(x), residual=x)


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
