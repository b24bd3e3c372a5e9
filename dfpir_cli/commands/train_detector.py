"""`dfpir train-detector`: train the degradation detector on clean photos degraded on the fly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..detect import FAMILIES
from ..errors import InputError
from ..train.detector import FAINT, DetectorRecipe, LabelledPhotos, load_photos, parse_label, train_detector
from .common import JsonOpt, QuietOpt, console, err_console, handle_errors, is_interactive


def _faint_families(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in FAINT]
    if unknown:
        raise InputError(f"--faint-families {text!r}: {', '.join(unknown)} cannot be made faint; use "
                         f"{' or '.join(FAINT)} (comma-separated)")
    return names


def _labelled(options: list[str]) -> list[tuple[str, Path]]:
    pairs = []
    for option in options:
        label, sep, folder = option.partition("=")
        if not sep or not folder:
            raise InputError(f"--labelled {option!r}: write LABEL=FOLDER, e.g. rain=RainTrainL/rainy")
        pair = (parse_label(label, FAMILIES), Path(folder))
        if pair in pairs:
            raise InputError(f"--labelled {option!r} is given twice")
        pairs.append(pair)
    return pairs


def _check_apart(labelled: list[tuple[str, Path]], clean_dirs: list[Path]) -> None:
    """A labelled folder must not overlap a --clean-dir: its photos would also be synthesised on as clean."""
    for label, folder in labelled:
        for clean in clean_dirs:
            a, b = folder.resolve(), clean.resolve()
            if a.is_relative_to(b) or b.is_relative_to(a):
                raise InputError(f"--labelled {label}={folder} overlaps --clean-dir {clean} (searched recursively): "
                                 f"keep labelled photos in folders of their own")


def train_detector_command(
    clean_dir: Annotated[list[Path], typer.Option(
        "--clean-dir", help="A folder of clean photos (searched recursively; repeatable). Every 20th photo is held "
                            "out to validate. Never put test images here.", show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Folder to write the detector to (config.json + model.safetensors); use it with "
                               "`dfpir detect --detector` and `dfpir restore --detector`.", show_default=False)],
    steps: Annotated[int, typer.Option("--steps", help="Optimiser steps.", min=1)] = DetectorRecipe.steps,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per step.", min=1)] = DetectorRecipe.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, one-cycle).")] = DetectorRecipe.lr,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the initial weights and every sample.")] = DetectorRecipe.seed,
    val_samples: Annotated[int, typer.Option(
        "--val-samples", help="Synthetic samples of the held-out photos scored at the end.", min=1)] = (
            DetectorRecipe.val_samples),
    realistic_share: Annotated[float, typer.Option(
        "--realistic-share", help="Share of rain, haze and low light made by the realistic synthesis (matched to "
                                  "the real test sets) rather than the benchmark's classic one.", min=0.0,
        max=1.0)] = DetectorRecipe.realistic_share,
    faint_share: Annotated[float, typer.Option(
        "--faint-share", help="Share of the --faint-families samples weakened to 30-100% of the synthesised "
                              "change (drizzle, thin haze).", min=0.0, max=1.0)] = DetectorRecipe.faint_share,
    faint_families: Annotated[str, typer.Option(
        "--faint-families", help="Comma list of the families --faint-share weakens: rain, haze or both.")] = (
            ",".join(DetectorRecipe.faint_families)),
    region: Annotated[int, typer.Option(
        "--region", help="Side in px of the photo region each sample is made from (its thumbnail is that region "
                         "shrunk to 64 px: nearer a whole photo's size, nearer the scale detection sees).",
        min=64)] = DetectorRecipe.region,
    camera_share: Annotated[float, typer.Option(
        "--camera-share", help="Share of the realistic noise samples made as a camera records noise (shot and "
                               "read noise on the sensor mosaic, demosaicing, noise reduction, tone curve, JPEG: "
                               "PolyU's statistics) instead of white Gaussian noise.", min=0.0,
        max=1.0)] = DetectorRecipe.camera_share,
    photographed_share: Annotated[float, typer.Option(
        "--photographed-share", help="Share of the realistic rain samples made as rain is photographed (streaks "
                                     "near and far, the veil of heavy rain, splashes) instead of Rain100L's thin "
                                     "streaks.", min=0.0, max=1.0)] = DetectorRecipe.photographed_share,
    labelled: Annotated[list[str] | None, typer.Option(
        "--labelled", help="LABEL=FOLDER: real photos whose degradation is known, trained on as they are (no "
                           "synthesis): clean, a family (noise, rain, haze, blur, lowlight) or two joined by + "
                           "(rain+noise); e.g. rain=RainTrainL/rainy and clean=RainTrainL/norain. Repeatable. Every "
                           "20th photo is held out and detected whole at the end. Never put test images here.",
        show_default=False)] = None,
    labelled_share: Annotated[float, typer.Option(
        "--labelled-share", help="Share of the samples taken from the --labelled photos (the rest synthesised).",
        min=0.0, max=1.0)] = DetectorRecipe.labelled_share,
    workers: Annotated[int, typer.Option(
        "--workers", help="Processes making samples while the network trains (0: in the main process).",
        min=0)] = DetectorRecipe.workers,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the degradation detector that `dfpir detect` and `restore --degradation auto` use.

    Each sample is a region of a clean photo left clean or degraded by dfpir's seeded synthesis (noise
    sigma 12-55 or a camera's noise, rain, haze, motion blur, low light, or one of those then noise; classic or
    realistic, rain sometimes as photographed, rain and haze sometimes faint), sometimes JPEG-compressed; with
    --labelled, a share of the samples are real photos with known degradations instead. Every 20th photo is
    held out and scored at the end.
    scripts/train_detector.py is the recipe of the shipped detector.

    Exit codes: 0 trained and written; 2 usage error (no photos, bad option).
    """
    with handle_errors():
        faint = _faint_families(faint_families)
        folders = _labelled(labelled or [])
        _check_apart(folders, clean_dir)
        photos, skipped = load_photos(clean_dir)
        groups = []
        for label, folder in folders:
            group, unreadable = load_photos([folder], f"--labelled {label}={folder}")
            groups.append(LabelledPhotos(label, group))
            skipped += unreadable
        if not folders and labelled_share != DetectorRecipe.labelled_share and not quiet:
            err_console.print("[yellow]--labelled-share has no effect without --labelled[/]", highlight=False)
        if skipped and not quiet:
            err_console.print(f"[yellow]{len(skipped)} unreadable file(s) skipped[/], e.g. {skipped[0]}",
                              highlight=False)
        recipe = DetectorRecipe(steps=steps, batch_size=batch_size, lr=lr, seed=seed, val_samples=val_samples,
                                realistic_share=realistic_share, faint_share=faint_share,
                                faint_families=faint, workers=workers, labelled_share=labelled_share,
                                region=region, camera_share=camera_share, photographed_share=photographed_share)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err_console, disable=quiet or as_json or not is_interactive()) as progress:
            bar = progress.add_task("train-detector", total=steps, loss="-")
            detector, report = train_detector(
                photos, recipe, on_step=lambda step, _total, loss: progress.update(bar, completed=step,
                                                                                    loss=f"{loss:.4f}"),
                labelled=groups)
        metadata = {"recipe": vars(recipe), "clean_dirs": [str(folder) for folder in clean_dir],
                    "labelled_dirs": {f"{label}={folder}": len(group.photos)
                                      for (label, folder), group in zip(folders, groups, strict=True)},
                    "report": report.to_json()}
        detector.save(output, metadata)
        if as_json:
            typer.echo(json.dumps({"output": str(output), **report.to_json()}, indent=2))
            return
        held_out = f"{report.val_photos} held-out photos" + (f", {report.labelled_val} labelled" if folders else "")
        table = Table(title=f"detector validation ({held_out})")
        table.add_column("true label")
        table.add_column("right", justify="right")
        for label, (right, total) in sorted(report.val_per_label.items()):
            table.add_row(label, f"{right}/{total} ({right / total:.0%})")
        table.add_row("[bold]all synthetic[/]", f"[bold]{report.val_accuracy:.1%}[/]")
        console.print(table)
        labelled_note = f" and {report.labelled_train} labelled ones" if folders else ""
        console.print(f"trained on {report.train_photos} photos{labelled_note}, {report.steps} steps in {report.seconds:.0f} s "
                      f"(final loss {report.final_loss:.4f}); detector written to {output}", highlight=False)
