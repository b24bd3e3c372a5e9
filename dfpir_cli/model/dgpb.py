"""The Degradation-Guided Perturbation Block (DFPIR section 3): DGM, DGCPM and CAAPM.

The reference calls the block ``shuffle_channel``; its attribute names are kept as the checkpoint format.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import DFPIRConfig
from .restormer import FeedForward, LayerNorm, attend, channel_attention_map, from_pixel_rows, local_conv, pixel_rows, row_bands


class CrossAttention(nn.Module):
    """CAAPM's attention: queries from the perturbed feature, keys and values from the original one.

    Each row of the channel-attention map keeps its ``int(c * gamma)`` largest logits (section 3.3); the
    result is scaled by a learnable scalar (``attn4``, initialised to 0.2).
    """

    def __init__(self, dim: int, heads: int, gamma: float, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.keep = int(dim // heads * gamma)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.attn4 = nn.Parameter(torch.tensor([0.2]))
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2, bias=bias)
        self.q = nn.Conv2d(dim, dim, 1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The attention in fp32 even under bf16/fp16 autocast: rounding q and k to 8 bits moves logits
        across the top-k cut, and each entry that crosses changes the output by a step (one checkpoint's
        bf16 restoration of a hazy photo sat 38 dB from fp32 with this in bf16, 53 dB with it in fp32).
        It is 4 of the network's blocks, so little of the bf16 speed-up is lost."""
        with torch.autocast(query.device.type, enabled=False):
            return self._attend(query.float(), context.float())

    def _attend(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        height, width = query.shape[-2:]
        bands = row_bands(height, width * self.kv_dwconv.out_channels * query.element_size(), query.device)
        q = [pixel_rows(local_conv(query, self.q, self.q_dwconv, top, bottom)) for top, bottom in bands]
        k, v = zip(*(pixel_rows(local_conv(context, self.kv, self.kv_dwconv, top, bottom)).chunk(2, dim=-1)
                     for top, bottom in bands), strict=True)
        attention = channel_attention_map(q, k, self.temperature, self.heads, keep=self.keep)
        return attend(attention * self.attn4, v, self.project_out, bands, width)


class DGPB(nn.Module):
    """Perturb a skip feature F (B, C, H, W) under the guidance of a prompt code t (B, text_dim).

    DGM: ``p = linear_layer3(linear_layer1(t))`` gives 2C scores. DGCPM lifts F to 2C channels, reorders
    each sample's channels by the descending order of its scores, and projects back to C. Because ``topk``
    indices carry no gradient, the DGM never trains: a prompt's channel order is fixed by the DGM's initial
    weights and the prompt's code, which is why published checkpoints must keep those weights.
    """

    def __init__(self, dim: int, heads: int, config: DFPIRConfig) -> None:
        super().__init__()
        self.mode = config.channel_perturbation
        self.caapm = config.caapm
        if self.mode != "none":
            self.linear_layer1 = nn.Linear(config.text_dim, config.text_dim)
            self.linear_layer3 = nn.Linear(config.text_dim, dim * 2)
            self.conv1x1 = nn.Conv2d(dim, dim * 2, 1)
            self.conv_out = nn.Conv2d(dim * 2, dim, 1)
        if self.caapm:
            self.norm1 = LayerNorm(dim, config.layernorm_type)
            self.norm2 = LayerNorm(dim, config.layernorm_type)
            self.norm3 = LayerNorm(dim, config.layernorm_type)
            self.select_attn = CrossAttention(dim, heads, config.gamma, config.bias)
            self.ffn = FeedForward(dim, config.ffn_expansion_factor, config.bias)

    def perturb_channels(self, feature: torch.Tensor, text_code: torch.Tensor) -> torch.Tensor:
        """``conv_out(P_t(conv1x1(F)))`` with P_t the prompt's channel reordering (or weighting).

        The three maps are linear, so they compose into one C x C matrix per sample: reordering the
        lifted channels is reordering the rows of conv1x1's weight and bias. One GEMM over the pixels
        replaces two, and the 2C-channel map is never built.
        """
        with torch.autocast(text_code.device.type, enabled=False):
            # fp32 under autocast: in bf16 close scores tie or swap, and a swap reorders the channels (a
            # checkpoint's output moved 35 dB from fp32 for some prompts); the DGM is two small linears.
            scores = self.linear_layer3(self.linear_layer1(text_code.float()))
        channels = feature.shape[1]
        lift_weight = self.conv1x1.weight.view(2 * channels, channels)
        out_weight = self.conv_out.weight.view(channels, 2 * channels)
        if self.mode == "shuffle":
            order = torch.topk(scores, k=scores.shape[1], dim=1).indices  # (B, 2C): a permutation per sample
            lift_weight, lift_bias = lift_weight[order], self.conv1x1.bias[order]  # (B, 2C, C), (B, 2C)
        else:  # "attention": the ablation that weights channels instead of reordering them
            gate = torch.sigmoid(scores)[:, :, None]
            lift_weight, lift_bias = lift_weight * gate, self.conv1x1.bias * gate[..., 0]
        weight_t = lift_weight.transpose(1, 2) @ out_weight.t()  # (B, C, C), transposed for the pixel rows
        bias = lift_bias @ out_weight.t() + self.conv_out.bias  # (B, C)
        out = torch.baddbmm(bias[:, None, :], pixel_rows(feature), weight_t)
        return from_pixel_rows(out, *feature.shape[-2:])

    def forward(self, feature: torch.Tensor, text_code: torch.Tensor) -> torch.Tensor:
        perturbed = feature if self.mode == "none" else self.perturb_channels(feature, text_code)
        if not self.caapm:
            return perturbed
        attended = self.select_attn(self.norm1(perturbed), self.norm2(feature))
        return self.ffn(self.norm3(attended), residual=attended)
