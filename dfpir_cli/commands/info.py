"""`dfpir info`: presets, the degradation vocabulary, and what a checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..base.environment import environment
from ..model import DFPIR, PRESETS
from ..weights.checkpoint import CONFIG_NAME, WEIGHTS_SHA256, load_checkpoint
from ..weights.official import is_official_spec, load_official, official_dir
from ..weights.prompts import DEGRADATIONS, FIVE_TASK
from .common import JsonOpt, console, handle_errors


def _recorded_sha256(folder: Path) -> str | None:
    """The sha256 of model.safetensors that the folder's config.json records (checked when it loaded)."""
    folder = folder.parent if folder.is_file() else folder
    try:
        recorded = json.loads((folder / CONFIG_NAME).read_text()).get(WEIGHTS_SHA256)
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) else None


def count_parameters(model: DFPIR) -> int:
    return sum(p.numel() for p in model.parameters())


def info(
    weights: Annotated[str | None, typer.Argument(help="A checkpoint folder, or official:NAME once fetched, to describe "
                                                              "(optional).")] = None,
    env: Annotated[bool, typer.Option("--env", help="Print what a bug report needs: Python, torch (CUDA build), "
                                                    "OpenCV, numpy, open_clip, huggingface_hub... versions, the "
                                                    "device and CPU features such as native bf16.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the network presets, the degradation names and aliases, and a checkpoint's contents; --env: the
    environment, for bug reports."""
    with handle_errors():
        if env:
            report = environment()
            if as_json:
                typer.echo(json.dumps(report, indent=2))
                return
            table = Table(title="dfpir environment (paste into bug reports)")
            table.add_column("what")
            table.add_column("value")
            for key, value in report.items():
                table.add_row(key, value)
            console.print(table)
            return
        if weights is not None:
            checkpoint = load_official(weights) if is_official_spec(weights) else load_checkpoint(weights)
            table = Table(title=f"checkpoint {weights}")
            table.add_column("field")
            table.add_column("value")
            table.add_row("parameters", f"{count_parameters(checkpoint.model):,}")
            for key, value in checkpoint.config.to_dict().items():
                table.add_row(key, str(value))
            table.add_row("prompt encoder", checkpoint.prompts.encoder)
            recorded = _recorded_sha256(official_dir(weights) if is_official_spec(weights) else Path(weights))
            table.add_row("model.safetensors sha256", f"{recorded} (checked)" if recorded else "not recorded (older folder)")
            table.add_row("degradations", ", ".join(checkpoint.prompts.names))
            notes = checkpoint.metadata.get("prompt_weights")
            for name, values in checkpoint.prompt_weights.items():
                modules = sorted({key.split(".")[0] for key in values})
                note = notes.get(name) if isinstance(notes, dict) else None
                table.add_row(f"{name}: its own weights", f"{sum(value.numel() for value in values.values()):,} parameters"
                              f" in {', '.join(modules)}" + (f"\n{note}" if isinstance(note, str) else ""))
            for key, value in checkpoint.metadata.items():
                if isinstance(value, (str, int, float)):
                    table.add_row(key, str(value))
            for key, value in (checkpoint.metadata.get("provenance") or {}).items():
                shown = "\n".join(map(str, value)) if isinstance(value, list) else str(value)
                table.add_row(f"provenance: {key}", shown)
            console.print(table)
            return
        presets = Table(title="network presets (--preset)")
        for column in ("preset", "dim", "blocks", "refinement", "DGCPM", "CAAPM", "parameters"):
            presets.add_column(column)
        for name, config in PRESETS.items():
            with_meta = DFPIR(config)
            presets.add_row(name, str(config.dim), str(list(config.num_blocks)), str(config.num_refinement_blocks),
                            config.channel_perturbation, str(config.caapm), f"{count_parameters(with_meta):,}")
        console.print(presets)
        vocab = Table(title="degradations (--degradation)")
        for column in ("name", "aliases", "prompt text"):
            vocab.add_column(column)
        for degradation in DEGRADATIONS.values():
            vocab.add_row(degradation.name, ", ".join(degradation.aliases), degradation.text)
        console.print(vocab)
        for name in (name for name in DEGRADATIONS if name not in FIVE_TASK):
            console.print(f"{name}: dfpir's own prompt, not the paper's; a checkpoint knows it only when trained or "
                          f"fine-tuned with it (dfpir train --degradations ...,{name}, or --own-weights; "
                          "docs/training.md). The default model's runs with a decoder of its own.")
