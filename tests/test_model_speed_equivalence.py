"""The speed-ups of the model change nothing: row bands (CPU) give the output and gradients of one band."""

from __future__ import annotations

import pytest
import torch
from conftest import MICRO

from dfpir_cli.model import DFPIR, DFPIRConfig, restormer

CONFIGS = {
    "micro": MICRO,
    "attention-bias-biasfree": DFPIRConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, text_dim=16,
                                           channel_perturbation="attention", bias=True, layernorm_type="BiasFree"),
    "heads": DFPIRConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, text_dim=16, heads=(2, 2, 4, 8)),
}


def run(model: DFPIR, image: torch.Tensor, codes: torch.Tensor, band_bytes: int,
        monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    monkeypatch.setattr(restormer, "BAND_BYTES", band_bytes)
    model.zero_grad()
    output = model(image, codes)
    output.square().mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output.detach(), grads


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_row_bands_match_one_band(name, monkeypatch):
    torch.manual_seed(0)
    model = DFPIR(CONFIGS[name])
    image, codes = torch.rand(2, 3, 40, 24), torch.randn(2, 16)
    monkeypatch.setattr(restormer, "BAND_BYTES", 1)
    assert len(restormer.row_bands(40, 1, image.device)) == 5  # 8-row bands: 5 at level 1, 3 at level 2
    banded, banded_grads = run(model, image, codes, 1, monkeypatch)
    whole, whole_grads = run(model, image, codes, 2**40, monkeypatch)
    torch.testing.assert_close(banded, whole, atol=1e-5, rtol=1e-5)
    assert banded_grads.keys() == whole_grads.keys()
    for key, grad in whole_grads.items():
        torch.testing.assert_close(banded_grads[key], grad, atol=1e-5 * grad.abs().max().item() + 1e-8, rtol=1e-4,
                                   msg=key)


def test_output_is_plain_contiguous_and_batch_independent(monkeypatch):
    monkeypatch.setattr(restormer, "BAND_BYTES", 1)
    torch.manual_seed(0)
    model = DFPIR(MICRO).eval()
    image, codes = torch.rand(2, 3, 24, 32), torch.randn(2, MICRO.text_dim)
    with torch.inference_mode():
        batched = model(image, codes)
        single = torch.cat([model(image[i:i + 1], codes[i:i + 1]) for i in range(2)])
        channels_last = model(image.contiguous(memory_format=torch.channels_last), codes)
    assert batched.is_contiguous()
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(channels_last, batched)


def test_bf16_sum_of_squares_matches_fp32():
    """bf16 rows are summed by a GEMM with ones (no fp32 copy of the band): close to the fp32 sums, with grads."""
    torch.manual_seed(0)
    bands = [torch.randn(2, pixels, 24, dtype=torch.float64) for pixels in (4096, 3000)]
    expected = sum(band.square().sum(dim=1) for band in bands)
    rows = [band.bfloat16()[..., :12] for band in bands]  # a strided view, as q and k are in the model
    got = restormer.sum_of_squares(rows)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected[..., :12], rtol=1e-2, atol=0)
    leaf = rows[0].detach().requires_grad_()
    restormer.sum_of_squares([leaf]).sum().backward()
    torch.testing.assert_close(leaf.grad.float(), 2 * leaf.detach().float(), rtol=1e-2, atol=1e-2)
