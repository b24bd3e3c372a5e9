"""`dfpir detect`: name what is wrong with each photo (no restoring), to sort a folder or check auto mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..base.imageio import read_image
from ..detect import AutoPolicy, Detection, Detector, known_families
from ..errors import InputError
from ..restore.pipeline import collect_inputs
from ..weights.resolve import resolve_weights
from .common import JsonOpt, WeightsOpt, console, handle_errors

DetectorOpt = Annotated[Path | None, typer.Option(
    "--detector", help="A detector folder written by `dfpir train-detector` (default: the one shipped with dfpir).",
    show_default=False)]


def _percent(probability: float) -> str:
    return f"{probability:.0%}"


def detect(
    inputs: Annotated[list[str], typer.Argument(
        help="Image files, folders and glob patterns, as `dfpir restore` takes them.", show_default=False)],
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Also look at the images in sub-folders of folder inputs.")] = False,
    top: Annotated[int, typer.Option("--top", help="How many of the most probable labels to list.", min=1)] = 3,
    detector_path: DetectorOpt = None,
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List per photo the most probable degradations (noise, rain, haze, blur, lowlight) or clean.

    Probabilities are per degradation and independent (a photo can be hazy and noisy); "clean" is the
    probability that none is present. "detected" is what `dfpir restore` with no --degradation would do with
    the same --weights (default: the default model): the top degradation that checkpoint restores and is sure
    enough of, two chained when the second is also likely, or clean (copied unchanged). A degradation that is
    likely but below what the checkpoint needs (the default model barely deblurs) is "withheld": the photo is
    left as it is and flagged, as is a low-confidence decision.

    Exit codes: 0 every image scored; 1 some image could not be read; 2 usage error (nothing to look at).
    """
    with handle_errors():
        files, problems = collect_inputs(inputs, recursive)
        if not files:
            reasons = "\n  ".join(problem.reason for problem in problems)
            raise InputError(f"nothing to detect:\n  {reasons}")
        detector = Detector.load(detector_path)
        checkpoint = resolve_weights(weights)
        families, policy = known_families(checkpoint.prompts.names), AutoPolicy.of(checkpoint.metadata)
        rows: list[dict] = [{"source": problem.spec, "error": problem.reason} for problem in problems]
        detections: list[tuple[str, Detection]] = []
        for item in files:
            try:
                detection = detector.detect(read_image(item.path).pixels, families, policy)
            except InputError as error:
                rows.append({"source": str(item.path), "error": str(error)})
                continue
            detections.append((str(item.path), detection))
            rows.append({"source": str(item.path), **detection.to_json()})
    failed = [row for row in rows if "error" in row]
    if as_json:
        counts: dict[str, int] = {}
        for _, detection in detections:
            counts[detection.label] = counts.get(detection.label, 0) + 1
        typer.echo(json.dumps({"files": rows, "counts": counts, "failed": len(failed)}, indent=2))
    else:
        table = Table(title="dfpir detect")
        table.add_column("photo", overflow="fold")
        table.add_column("detected")
        for rank in range(top):
            table.add_column(f"#{rank + 1}")
        table.add_column("noise sigma", justify="right")
        for source, detection in detections:
            label = detection.label + (f" [yellow](withheld: {', '.join(detection.withheld)})[/]" if detection.withheld
                                       else " [yellow](low confidence)[/]" if detection.low_confidence else "")
            ranked = [f"{name} {_percent(p)}" for name, p in detection.ranked()[:top]]
            sigma = "" if detection.noise_sigma is None else f"{detection.noise_sigma:.0f}"
            table.add_row(Path(source).name if len(detections) > 1 else source, label, *ranked, sigma)
        console.print(table)
        for row in failed:
            console.print(f"[red]failed[/] {row['source']}: {row['error']}", highlight=False)
    raise typer.Exit(1 if failed else 0)
