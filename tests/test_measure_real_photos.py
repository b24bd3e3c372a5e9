"""scripts/measure_real_photos.py renders its saved report as Markdown tables (the README's real-photos table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "measure_real_photos.py"


def test_a_saved_report_prints_as_markdown(tmp_path: Path) -> None:
    entry = {"photos": 2, "input": 35.0, "input ssim": 0.9, "input worst gain": 0.0,
             "auto": 36.5, "auto ssim": 0.95, "auto worst gain": 0.25}
    report = {"detection": [{"group": "rainy", "expected": "rain", "photos": 4, "detected": 3, "share": 0.75,
                             "decisions": {"rain": 3, "clean": 1}},
                            {"group": "CBSD68 (clean)", "expected": "clean", "photos": 2, "detected": 2, "share": 1.0}],
              "polyu": {"summary": {"exposed (lum >= 0.2)": entry}, "columns": ["auto"], "precision": "bf16",
                        "photos": [{"auto_choice": "camnoise"}, {"auto_choice": "clean"}]}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    done = subprocess.run([sys.executable, str(SCRIPT), "--report", str(path), "--markdown"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "| group | expected | photos | detected | decisions |" in lines
    assert "| rainy | rain | 4 | 75% | rain 3, clean 1 |" in lines
    assert "| exposed (lum >= 0.2) | 2 | 35.00 / 0.900 | 36.50 / 0.950 (worst +0.25) |" in lines
    assert "auto mode chose: {'camnoise': 1, 'clean': 1}" in lines
