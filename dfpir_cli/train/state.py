"""A run's resumable state: ``resume.pt`` (optimizer, scaler, step, RNG states), and what must match to resume.

``resume.pt`` is written after the checkpoint folder it names, both atomically, so a run killed at any
moment resumes from its last save and loses at most ``save_every`` steps. It holds plain types and
tensors only and is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..base.imageio import share_like_new
from ..data.train_sets import TrainingData
from ..errors import TrainingError
from .recipe import PhasePlan, Recipe

STATE_NAME = "resume.pt"
STATE_FORMAT = "dfpir-train-state"
STATE_VERSION = 1


def state_path(output: Path) -> Path:
    return output / STATE_NAME


def read_state(output: Path) -> dict[str, Any] | None:
    """The resume state of the run in ``output``, or None when there is none."""
    path = state_path(output)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        raise TrainingError(f"{path} cannot be read ({type(error).__name__}: {error}); it is corrupt. Delete it to "
                            "start over, or restore it from a backup.") from error
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path} is not a dfpir training state")
    return state


def atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        share_like_new(temporary)
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_partial_writes(output: Path) -> None:
    """Delete the temporary files and folders of saves that a killed run left half-written."""
    for folder in (output, output / "checkpoints"):
        for leftover in folder.glob(".*.tmp"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    version, mt_state, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # the global generator is always MT19937, whose legacy state is a tuple
    kind, keys, position, has_gauss, cached = numpy_state
    state = {"python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_identity(recipe: Recipe, plans: Sequence[PhasePlan], data: TrainingData) -> dict[str, Any]:
    """What must match for a resumed run to continue the same training."""
    identity = recipe.to_dict()
    identity["plan"] = [{"lr": p.lr, "patch_size": p.patch_size, "global_batch": p.global_batch, "steps": p.steps}
                        for p in plans]
    identity["train_pairs"] = {name: counts[0] for name, counts in data.counts().items()}
    identity["val_pairs"] = len(data.val)
    return identity


def with_recipe_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved run's identity plus the Recipe fields added since it was saved, at their defaults.

    A run saved before a field existed trained with that field's default (L1 before ``loss``, a random init
    before ``init_weights``, fp32 before ``precision``), so its absence is no difference.
    """
    defaults: dict[str, Any] = {f.name: f.default for f in fields(Recipe)
                                if isinstance(f.default, (str, int, float, bool, type(None)))}
    defaults["own_weights"] = []  # runs before --own-weights trained the whole network
    return {**defaults, **saved}


def identity_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                out.append(f"{name}: run had {saved.get(key, '(none)')!r}, now {current.get(key, '(none)')!r}")
            else:
                out += identity_differences(saved[key], current[key], name)
        return out
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)) and len(saved) == len(current):
        return [d for i, (a, b) in enumerate(zip(saved, current, strict=True))
                for d in identity_differences(a, b, f"{prefix}[{i}]")]
    return [] if saved == current else [f"{prefix}: run had {saved!r}, now {current!r}"]


def best_on_disk(output: Path) -> float | None:
    try:
        return float(json.loads((output / "best" / "config.json").read_text())["metadata"]["val_psnr_mean"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
