"""scripts/fetch_training_photos.py's guard: training photos equal to a real test image, or cropped, turned or
mirrored from one, are recognised (and so dropped)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fetch_training_photos.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fetch_training_photos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_guard_finds_crops_in_every_orientation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    test = cv2.GaussianBlur(rng.integers(0, 256, (60, 90), dtype=np.uint8), (0, 0), 1.5)
    for folder in ("Set/target", "Set/input"):
        (tmp_path / folder).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "Set" / "target" / "a.png"), test)
    cv2.imwrite(str(tmp_path / "Set" / "input" / "b.png"), 255 - test)  # a degraded input: not a clean photo
    guard = load_script().TestSetGuard(tmp_path)
    crop = test[10:50, 20:80].astype(np.float32) / 255
    for turns in range(4):
        for candidate in (np.rot90(crop, turns), np.rot90(crop, turns)[:, ::-1]):
            assert guard.match(np.ascontiguousarray(candidate)) == "Set/target/a.png"
    assert guard.match(1 - crop) is None  # the degraded inputs are not what photos are matched against
    other = cv2.GaussianBlur(rng.integers(0, 256, (40, 60), dtype=np.uint8), (0, 0), 1.5).astype(np.float32) / 255
    assert guard.match(other) is None
