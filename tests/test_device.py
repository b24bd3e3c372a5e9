"""The process-wide allocator setting that lets tiles reuse their activations' memory (dfpir_cli.base.device)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys

import pytest

from dfpir_cli.base.device import KEEP_FREED_ENV

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="the setting tunes glibc's malloc only")

# A small network's forward pass, eight times, as tiles run: the page faults of each pass. glibc hands large freed
# blocks back to the system, so each pass faults its activations' pages in again unless they are kept.
PASSES = """
import resource, torch
from dfpir_cli.base.device import keep_freed_memory
from dfpir_cli.model import DFPIR, PRESETS
kept = keep_freed_memory()
torch.manual_seed(0)
model = DFPIR(PRESETS["tiny"]).eval()
image, code = torch.rand(1, 3, 192, 192), torch.rand(1, PRESETS["tiny"].text_dim)
faults = []
with torch.inference_mode():
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model(image, code)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, *faults)
"""


def _faults(keep: str) -> tuple[bool, list[int]]:
    env = {**os.environ, KEEP_FREED_ENV: keep}
    result = subprocess.run([sys.executable, "-c", PASSES], env=env, capture_output=True, text=True, timeout=120,
                            check=True)
    kept, *faults = result.stdout.split()
    return kept == "True", [int(value) for value in faults]


@glibc
def test_later_passes_reuse_the_memory_of_earlier_ones() -> None:
    kept, faults = _faults("1")
    assert kept
    # The first pass maps its memory, the others reuse it: most fault nothing at all (measured: 0 on an idle
    # machine; with other processes on the cores, a pass now and then faults a few hundred to 3,000 pages as
    # blocks land elsewhere in the heap), against 5,000-12,000 each without the setting.
    assert faults[0] > 2000
    assert statistics.median(faults[1:]) < 500
    left, faults_as_is = _faults("0")
    assert not left  # the opt-out leaves glibc's allocator alone, which maps and faults memory every pass
    assert min(faults_as_is[1:]) > 2000
    assert sum(faults[1:]) * 4 < sum(faults_as_is[1:])


def test_cli_applies_it_before_any_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from dfpir_cli import cli

    calls: list[bool] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True) or True)
    result = CliRunner().invoke(cli.app, ["info"])
    assert result.exit_code == 0, result.output
    assert calls == [True]
