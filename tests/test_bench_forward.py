"""scripts/bench_forward.py --breakdown: a pass's time sorted by kind of work, with GFLOP/s and bounds."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_forward.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_forward", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ops_are_sorted_into_kinds_with_their_flops() -> None:
    bench = load_script()
    image, pointwise, depthwise, dense = [1, 16, 40, 50], [32, 16, 1, 1], [16, 1, 3, 3], [32, 16, 3, 3]
    assert bench.kind_of("aten::mkldnn_convolution", [image, pointwise]) == "1x1 convolutions"
    assert bench.kind_of("aten::mkldnn_convolution", [image, depthwise]) == "depthwise 3x3 convolutions"
    assert bench.kind_of("aten::mkldnn_convolution", [image, dense]) == "3x3 convolutions"
    assert bench.kind_of("aten::baddbmm", []) == "matrix products"
    assert bench.kind_of("aten::native_layer_norm", []) == "LayerNorm"
    assert bench.kind_of("aten::copy_", []) == "copies, casts, concatenations"
    assert bench.kind_of("aten::pixel_shuffle", []) == "other"
    assert bench.flops_of("aten::mkldnn_convolution", [image, pointwise]) == 2 * 32 * 16 * 40 * 50
    assert bench.flops_of("aten::mkldnn_convolution", [image, depthwise]) == 2 * 16 * 9 * 40 * 50
    assert bench.flops_of("aten::addmm", [[7], [100, 16], [16, 7]]) == 2 * 100 * 16 * 7
    assert bench.flops_of("aten::bmm", [[2, 8, 100], [2, 100, 8]]) == 2 * 2 * 8 * 100 * 8
    assert bench.flops_of("aten::gelu_", [image]) == 0


def test_breakdown_prints_every_kind_and_the_bounds() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--preset", "tiny", "--size", "64", "--runs", "1",
                             "--warmup", "0", "--matmul-runs", "1", "--breakdown"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "where one pass's" in out and "1x1 convolutions" in out and "depthwise 3x3 convolutions" in out
    assert "LayerNorm" in out and "GEMM-like work" in out and "at most" in out
