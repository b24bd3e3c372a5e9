"""Which checkpoint a command runs: ``--weights`` resolved to a loaded :class:`Checkpoint`.

One place decides what ``--weights`` may be, so ``restore``, ``eval`` and ``train`` read it alike: a
checkpoint folder, its ``model.safetensors`` or ``config.json``, a Hugging Face repo id (``owner/name`` or
``owner/name@revision``, loaded through :mod:`dfpir_cli.weights.hub`), one of the authors' checkpoints converted
by ``dfpir fetch-weights official:NAME`` (``official:five-task``, loaded from dfpir's cache only), or nothing for
the default model. A reference ``.pth`` file cannot run as is: it lacks the prompt codes (DESIGN.md section 3), so the user
is told how to import it once.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, Checkpoint, is_checkpoint_dir, load_checkpoint

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "default"
REFERENCE_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt")


def _looks_like_repo_id(spec: str) -> bool:
    """``owner/name[@revision]`` that is not a local path; the hub module's own test when it is installed."""
    try:
        from .hub import looks_like_repo_id
    except ImportError:
        head = spec.partition("@")[0]
        return (not Path(spec).exists() and head.count("/") == 1 and not spec.startswith((".", "/", "~"))
                and not spec.endswith(REFERENCE_SUFFIXES))
    return looks_like_repo_id(spec)


def resolve_weights(spec: str | Path | None, device: str | torch.device = "cpu") -> Checkpoint:
    """Load the checkpoint ``spec`` names onto ``device``; a :class:`CheckpointError` says what to do if it cannot."""
    if spec is None or str(spec).strip() == "":
        if is_checkpoint_dir(DEFAULT_CHECKPOINT):
            return load_checkpoint(DEFAULT_CHECKPOINT, device)
        raise CheckpointError(
            "no default model is installed with this copy of dfpir: pass --weights with a checkpoint folder "
            "(config.json + model.safetensors), a Hugging Face repo id fetched with `dfpir fetch-weights`, "
            "or a reference .pth imported with `dfpir fetch-weights --import-official FILE`.")
    text = str(spec).strip()
    if text.lower().startswith("official:"):
        from .official import load_official

        return load_official(text, device)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir() or path.name in (CONFIG_NAME, WEIGHTS_NAME):
            return load_checkpoint(path, device)
        if path.suffix.lower() in REFERENCE_SUFFIXES or path.name.endswith(".pth.tar"):
            raise CheckpointError(
                f"{path} is a reference PyTorch checkpoint: it holds the network weights but not the prompt "
                "codes dfpir needs. Import it once with "
                f"`dfpir fetch-weights --import-official {path} --prompts five-task --output DIR` "
                "(--prompts three-task for a 3-task model; needs the CLIP weights), then pass --weights DIR.")
        if path.suffix == ".safetensors":
            raise CheckpointError(f"{path} is a safetensors file but not a dfpir checkpoint's {WEIGHTS_NAME}: "
                                  f"a checkpoint is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
        raise CheckpointError(f"{path} is not a checkpoint: pass a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
    if _looks_like_repo_id(text):
        try:
            from .hub import load_from_hub
        except ImportError as error:
            raise CheckpointError(f"{text!r} looks like a Hugging Face repo id, but Hub support is not "
                                  f"available in this install ({error})") from error
        return load_from_hub(text, None, device=device)
    raise CheckpointError(f"--weights {text}: no such file or folder, and not a Hugging Face repo id (owner/name). "
                          "Pass a checkpoint folder, its model.safetensors, or a repo id.")
