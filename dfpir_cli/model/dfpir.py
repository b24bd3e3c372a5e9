"""The DFPIR network: a Restormer U-Net whose skip features pass through DGPBs (DESIGN.md section 2)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .config import DFPIRConfig
from .dgpb import DGPB
from .restormer import Downsample, OverlapPatchEmbed, Upsample, transformer_level


class DFPIR(nn.Module):
    """All-in-one restorer guided by a prompt code.

    ``model(image, text_code)``: image (B, 3, H, W) in [0, 1] with H and W multiples of ``multiple_of``,
    text_code (B, text_dim), one code per sample. Use :func:`restore_any_size` for other sizes.
    """

    multiple_of = 8  # three 2x downsamplings
    # the modules after the latent level, in the order forward runs them (a prompt may carry its own copy:
    # dfpir_cli.weights.checkpoint's prompt_weights)
    decoder_modules = ("up4_3", "reduce_chan_level3", "decoder_level3", "up3_2", "reduce_chan_level2",
                       "decoder_level2", "up2_1", "decoder_level1", "refinement", "output")

    def __init__(self, config: DFPIRConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DFPIRConfig()
        dim, blocks, heads = config.dim, config.num_blocks, config.heads

        def level(width: int, count: int, head_count: int) -> nn.Sequential:
            return transformer_level(width, count, head_count, config.ffn_expansion_factor, config.bias,
                                     config.layernorm_type)

        self.patch_embed = OverlapPatchEmbed(config.in_channels, dim, config.bias)
        self.encoder_level1 = level(dim, blocks[0], heads[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = level(dim * 2, blocks[1], heads[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = level(dim * 4, blocks[2], heads[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = level(dim * 8, blocks[3], heads[3])
        if config.has_dgpb:
            self.encoder_shuffle_channel1 = DGPB(dim, heads[0], config)
            self.encoder_shuffle_channel2 = DGPB(dim * 2, heads[1], config)
            self.encoder_shuffle_channel3 = DGPB(dim * 4, heads[2], config)
            self.latent_shuffle_channel = DGPB(dim * 8, heads[3], config)

        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=config.bias)
        self.decoder_level3 = level(dim * 4, blocks[2], heads[2])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=config.bias)
        self.decoder_level2 = level(dim * 2, blocks[1], heads[1])
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = level(dim * 2, blocks[0], heads[0])
        self.refinement = level(dim * 2, config.num_refinement_blocks, heads[0])
        self.output = nn.Conv2d(dim * 2, config.out_channels, 3, padding=1, bias=config.bias)

    def _perturb(self, name: str, feature: torch.Tensor, text_code: torch.Tensor) -> torch.Tensor:
        if not self.config.has_dgpb:
            return feature
        return getattr(self, name)(feature, text_code)

    def forward(self, image: torch.Tensor, text_code: torch.Tensor) -> torch.Tensor:
        self._check_inputs(image, text_code)
        text_code = text_code.to(image.dtype)

        # Channels-last from the first convolution on (see restormer.py); the output is plain NCHW again.
        enc1 = self.encoder_level1(self.patch_embed(image.contiguous(memory_format=torch.channels_last)))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        latent = self._perturb("latent_shuffle_channel", latent, text_code)

        skip3 = self._perturb("encoder_shuffle_channel3", enc3, text_code)
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), skip3], dim=1)))
        skip2 = self._perturb("encoder_shuffle_channel2", enc2, text_code)
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), skip2], dim=1)))
        skip1 = self._perturb("encoder_shuffle_channel1", enc1, text_code)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), skip1], dim=1))
        return (self.output(self.refinement(dec1)) + image).contiguous()

    def _check_inputs(self, image: torch.Tensor, text_code: torch.Tensor) -> None:
        if image.ndim != 4 or image.shape[1] != self.config.in_channels:
            raise InputError(f"expected an image batch of shape (B, {self.config.in_channels}, H, W), "
                             f"got {tuple(image.shape)}")
        height, width = image.shape[-2:]
        if height % self.multiple_of or width % self.multiple_of:
            raise InputError(f"image size {height}x{width} is not a multiple of {self.multiple_of}; "
                             "use dfpir_cli.model.restore_any_size, which pads (reflect) and crops back")
        expected = (image.shape[0], self.config.text_dim)
        if tuple(text_code.shape) != expected:
            raise InputError(f"text code must have shape (B, {self.config.text_dim}) = {expected} "
                             f"for a batch of {image.shape[0]} images, got {tuple(text_code.shape)}")


def restore_any_size(model: DFPIR, image: torch.Tensor, text_code: torch.Tensor,
                     forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Run the network on any H, W: reflect-pad to ``model.multiple_of``, then crop back.

    ``forward(image, text_code)`` runs the network (default: ``model`` itself), for a caller that wraps the
    pass, as :class:`dfpir_cli.base.precision.FiniteGuard` does to re-run a non-finite one in a safer precision.
    """
    height, width = image.shape[-2:]
    multiple = model.multiple_of
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        # Reflect padding needs the pad to be smaller than the side; replicate covers tiny images.
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    return (forward or model)(image, text_code)[..., :height, :width]
