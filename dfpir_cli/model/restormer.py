"""The Restormer backbone (Zamir et al., CVPR 2022) as DFPIR uses it.

Attribute names follow the reference implementation, since they are the checkpoint format.

Feature maps travel in channels-last memory format: a (B, C, H, W) tensor whose memory is a row of C
channels per pixel. In that layout a 1x1 convolution is one matrix product over the pixel rows, the
depthwise 3x3 convolutions and the per-pixel LayerNorm run several times faster than in NCHW, and the
channel attention reads q, k and v where the depthwise convolution wrote them, without copies.

On the CPU the wide hidden maps (1x1 conv then depthwise 3x3: qkv, and GDFN's 5.3x-wide map) are built
a band of image rows at a time (:func:`row_bands`), each band with one halo row above and below for the
3x3 kernel. The allocator recycles a band of under 32 MiB instead of faulting in fresh pages for every
layer, which for a full-size map (130 MiB at 256x256) costs about as much as the arithmetic, and much of
a band stays in cache between the convolutions, the gate and the projection. On an idle 2-core machine
this takes a 256x256 forward pass from 3.0 s to 2.0-2.2 s. Results are the same up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C): a view when ``x`` is channels-last, a copy otherwise."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def from_pixel_rows(rows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) -> a channels-last (B, C, H, W) view of the same memory."""
    return rows.view(rows.shape[0], height, width, rows.shape[-1]).permute(0, 3, 1, 2)


# Hidden-map bytes per band of rows on the CPU: under glibc's 32 MiB mmap threshold, so that freed bands
# are reused rather than unmapped. Smaller bands (16 MiB) save a little more CPU time on an idle machine,
# but each band adds parallel regions, and where other processes hold the cores every region waits for a
# descheduled thread: 30 MiB keeps most of the gain and loses little there.
BAND_BYTES = 30 * 2**20


def tracing() -> bool:
    """True while the network is being exported (ONNX) or compiled: the graph is then written for any H and W,
    so the forward pass takes whole maps, no bands, slices or in-place ops that depend on one size."""
    # getattr: torch.compiler's is_compiling (2.3) and is_exporting (2.6) are newer than the oldest torch allowed.
    return torch.onnx.is_in_onnx_export() or any(getattr(torch.compiler, name, bool)()
                                                 for name in ("is_compiling", "is_exporting"))


def row_bands(height: int, row_bytes: int, device: torch.device) -> list[tuple[int, int]]:
    """Split ``height`` rows into ``(top, bottom)`` bands of about BAND_BYTES of hidden map each (CPU).

    Other devices get one band: there, fewer and larger kernels are what is fast; so does a traced graph.
    """
    if device.type != "cpu" or tracing():
        return [(0, height)]
    rows = max(8, BAND_BYTES // max(row_bytes, 1))  # at least 8 rows: 2 halo rows cost 25% at most
    return [(top, min(top + rows, height)) for top in range(0, height, rows)]


def local_conv(x: torch.Tensor, pointwise_conv: nn.Conv2d, depthwise_conv: nn.Conv2d, top: int,
               bottom: int) -> torch.Tensor:
    """Rows ``top:bottom`` of ``depthwise_conv(pointwise_conv(x))``, from rows ``top-1:bottom+1`` of x.

    The depthwise kernel is 3x3 with zero padding, so one halo row on each side is all a band needs, and
    at the image border the padding is the same as for the whole map.
    """
    if top == 0 and bottom == x.shape[-2]:
        return depthwise_conv(pointwise_conv(x))
    above, below = max(top - 1, 0), min(bottom + 1, x.shape[-2])
    return depthwise_conv(pointwise_conv(x[:, :, above:below]))[:, :, top - above:bottom - above]


def join_bands(bands: list[torch.Tensor]) -> torch.Tensor:
    return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)


def sum_of_squares(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-channel sums of squares over all pixel rows (B, pixels, C) of all bands: (B, C), at least fp32.

    bf16 rows on the CPU are summed by a GEMM with a row of ones, which accumulates in fp32 inside oneDNN:
    ``sum(dtype=float32)`` would first copy the whole band to fp32 (the largest copy of a bf16 forward pass;
    the GEMM takes a 456x480 tile's pass 4-7% faster). Squares and sums are rounded to bf16, a relative error
    of about 3e-3 in a norm that divides logits which are themselves bf16.
    """
    if rows[0].dtype is torch.bfloat16 and rows[0].device.type == "cpu":
        total = None
        for band in rows:
            ones = band.new_ones(band.shape[0], 1, band.shape[1])
            part = torch.bmm(ones, band.square())[:, 0].float()
            total = part if total is None else total + part
        assert total is not None
        return total
    dtype = torch.promote_types(rows[0].dtype, torch.float32)  # bf16 autocast: accumulate in fp32
    total = rows[0].square().sum(dim=1, dtype=dtype)
    for band in rows[1:]:
        total = total + band.square().sum(dim=1, dtype=dtype)
    return total


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
    if tracing() or (torch.is_grad_enabled() and (gate.requires_grad or value.requires_grad)):
        return F.gelu(gate) * value
    if gate.dtype != torch.float32 and gate.device.type == "cpu":
        # The gate is every other half of each pixel's channels: a strided view. PyTorch's CPU GELU does not
        # vectorise strided bf16, so a dense copy first is 2x faster (measured; the copy is dearer in fp32).
        gate = gate.contiguous(memory_format=torch.channels_last)
    return torch.ops.aten.gelu_(gate).mul_(value)


class _WithBiasNorm(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Biased variance and eps 1e-5, as the reference; F.layer_norm computes exactly this, fused.
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, eps=1e-5)


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


def channel_attention_map(q: Sequence[torch.Tensor], k: Sequence[torch.Tensor], temperature: torch.Tensor,
                          heads: int, keep: int | None = None, squares: torch.Tensor | None = None) -> torch.Tensor:
    """The transposed (channel) attention maps of Restormer's MDTA and DFPIR's CAAPM: (B, heads, c, c).

    q and k are pixel rows (B, pixels, C), c = C / heads, given band by band (the bands together are the
    whole map). Per head, ``softmax(q_n @ k_n^T * temperature)``, with q_n, k_n the rows of q^T, k^T
    L2-normalised along the pixels. With ``keep``, only the ``keep`` largest logits of each row survive
    (CAAPM's top-k, DFPIR section 3.3). ``squares`` (B, 2C) are the sums of squares along the pixels of
    q's, then k's channels, for a caller that can get both in one pass.
    """
    batch, _, channels = q[0].shape
    width = channels // heads
    if squares is None:
        squares = torch.cat([sum_of_squares(q), sum_of_squares(k)], dim=1)
    # Normalising q and k is dividing the logits by the outer product of their norms (F.normalize's eps).
    q_norm, k_norm = squares.sqrt().clamp_min(1e-12).chunk(2, dim=1)
    q_norm, k_norm = q_norm.view(batch, heads, width, 1), k_norm.view(batch, heads, 1, width)
    logits = None
    for q_band, k_band in zip(q, k, strict=True):
        q_heads = q_band.view(batch, -1, heads, width).permute(0, 2, 3, 1)  # (B, head, c, pixels)
        k_heads = k_band.view(batch, -1, heads, width).transpose(1, 2)  # (B, head, pixels, c)
        logits = q_heads @ k_heads if logits is None else logits + q_heads @ k_heads
    assert logits is not None
    logits = logits * (temperature / (q_norm * k_norm))
    if keep is not None and keep < width:
        kept = torch.topk(logits, k=keep, dim=-1).indices
        mask = torch.full_like(logits, float("-inf")).scatter_(-1, kept, 0.0)
        logits = logits + mask
    return logits.softmax(dim=-1)


def attend(attention: torch.Tensor, v: Sequence[torch.Tensor], project_out: nn.Conv2d,
           bands: list[tuple[int, int]], width: int, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``project_out(attention @ v) (+ residual)`` as one GEMM per band of v's pixel rows (B, pixels, C).

    With A the block-diagonal (C, C) matrix of the heads' maps, the output rows are
    ``v @ A^T @ W_out^T``: the small product ``A^T @ W_out^T`` (head by head, no zero blocks) is formed
    first, so the attention output before the projection is never built.
    """
    batch, heads, head_width, _ = attention.shape
    weight_t = project_out.weight.view(project_out.out_channels, -1).t().reshape(heads, head_width, -1)
    mixed = (attention.transpose(-1, -2) @ weight_t).reshape(batch, heads * head_width, -1)
    outputs = []
    for (top, bottom), v_band in zip(bands, v, strict=True):
        if residual is None:
            out = torch.bmm(v_band, mixed)
        else:
            out = torch.baddbmm(pixel_rows(residual[:, :, top:bottom]), v_band, mixed)
        if project_out.bias is not None:
            out = out + project_out.bias
        outputs.append(from_pixel_rows(out, bottom - top, width))
    return join_bands(outputs)


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
        """``project_out(attention(x)) (+ residual)``, the qkv map built band by band (see :func:`row_bands`)."""
        height, width = x.shape[-2:]
        bands = row_bands(height, width * self.qkv_dwconv.out_channels * x.element_size(), x.device)
        qk, v = zip(*(pixel_rows(local_conv(x, self.qkv, self.qkv_dwconv, top, bottom)).split(
            [2 * x.shape[1], x.shape[1]], dim=-1) for top, bottom in bands), strict=True)
        squares = sum_of_squares(qk)  # q and k side by side: one pass for both
        q, k = zip(*(band.chunk(2, dim=-1) for band in qk), strict=True)
        attention = channel_attention_map(q, k, self.temperature, self.heads, squares=squares)
        return attend(attention, v, self.project_out, bands, width, residual=residual)


class FeedForward(nn.Module):
    """GDFN: gated depthwise-conv feed-forward network."""

    def __init__(self, dim: int, expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``project_out(gelu(x1) * x2) (+ residual)``, band by band of rows (see :func:`row_bands`)."""
        height, width = x.shape[-2:]
        outputs = []
        for top, bottom in row_bands(height, width * self.dwconv.out_channels * x.element_size(), x.device):
            gate, value = local_conv(x, self.project_in, self.dwconv, top, bottom).chunk(2, dim=1)
            band_residual = None if residual is None else residual[:, :, top:bottom]
            outputs.append(pointwise(self.project_out, _gelu_gate(gate, value), band_residual))
        return join_bands(outputs)


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
