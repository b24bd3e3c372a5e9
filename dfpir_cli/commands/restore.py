"""`dfpir restore`: restore files, folders and globs of photos, tiled for large images, on the best device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import torch.distributed as dist
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..base.distributed import Distributed, init_distributed, shutdown_distributed
from ..base.precision import check_precision
from ..detect import Detector, parse_chain
from ..errors import InputError
from ..restore.ensemble import check_views
from ..restore.pipeline import (
    DEFAULT_OVERLAP,
    Choice,
    Chooser,
    FileResult,
    InputFile,
    InputProblem,
    RestoreListener,
    Restorer,
    RestoreSummary,
    auto_chooser,
    chain_chooser,
    check_outputs_spare_inputs,
    collect_inputs,
    merge_summaries,
    parse_shard,
    prompt_code,
    restore_files,
    shard_files,
)
from ..weights.resolve import resolve_weights
from .common import (
    DeviceOpt,
    HazeGuideOpt,
    JsonOpt,
    PrecisionOpt,
    QuietOpt,
    SelfEnsembleOpt,
    WeightsOpt,
    announce_bf16_check,
    console,
    err_console,
    handle_errors,
)
from .detect import DetectorOpt

MAX_ROWS = 25  # rows of failed / skipped files listed in the summary


class _ProgressListener(RestoreListener):
    """Rich progress: one bar over the files, one over the forward passes of the current file.

    A pass restores one tile of the full-size photo in one view with one prompt, so the second bar counts
    tiles, times the views of ``--self-ensemble`` (4 at most for rain), times the prompts of a chain; the
    thumbnail a haze or low-light pass may take its tone from is not counted.
    """

    def __init__(self, progress: Progress, total_files: int, views: int = 1) -> None:
        self.progress = progress
        self.files = progress.add_task("files", total=total_files)
        self.label = "  tiles" if views == 1 else f"  tiles x {views} views"
        self.tiles = progress.add_task(self.label, total=1, visible=False)

    def file_started(self, index: int, source: Path, tiles: int) -> None:
        self.progress.update(self.files, description=f"{source.name}")
        self.progress.reset(self.tiles, total=tiles, completed=0, visible=tiles > 1, description=self.label)

    def tiles_done(self, done: int, total: int) -> None:
        self.progress.update(self.tiles, completed=done, total=total)

    def file_chosen(self, source: Path, choice: Choice) -> None:
        if choice.detection is None:
            return
        doubt = " [yellow](low confidence)[/]" if choice.detection.low_confidence else ""
        self.progress.console.print(f"{source.name}: {choice.detection.label} {choice.detection.confidence:.0%}"
                                    f"{doubt} -> {choice.label}", highlight=False)

    def file_finished(self, result: FileResult) -> None:
        if result.status == "failed" and result.output is None and not Path(result.source).is_file():
            return  # an input problem (missing path, empty folder): not one of the counted files
        self.progress.advance(self.files)
        self.progress.update(self.tiles, visible=False)
        if result.status == "failed":
            self.progress.console.print(f"[red]failed[/] {result.source}: {result.reason}", highlight=False)


def _print_quiet_summary(summary: RestoreSummary, output: Path) -> None:
    """--quiet: each failure and each note (tiles re-run in a safer precision, ...) on its own line on stderr,
    then one line of counts."""
    for result in summary.results:
        if result.status == "failed":
            err_console.print(f"[red]failed:[/] {result.source}: {result.reason}", highlight=False, soft_wrap=True)
    for note in summary.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    clean = f"{summary.count('clean')} clean (copied), " if summary.detected else ""
    console.print(f"{summary.count('processed')} restored, {clean}{summary.count('skipped')} skipped, "
                  f"{summary.count('failed')} failed; outputs in {output}", highlight=False, soft_wrap=True)


def _tile_text(tile: int | None) -> str:
    return "whole image" if tile is None else f"{tile} px"


def _print_summary(summary: RestoreSummary, output: Path) -> None:
    table = Table(title="dfpir restore", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("processed", f"[green]{summary.count('processed')}[/]")
    if summary.detected:
        table.add_row("clean (copied)", str(summary.count("clean")))
    table.add_row("skipped", f"[yellow]{summary.count('skipped')}[/]")
    table.add_row("failed", f"[red]{summary.count('failed')}[/]")
    table.add_row("megapixels", f"{summary.megapixels:.2f} in {summary.seconds:.1f} s")
    table.add_row("speed", f"{summary.megapixels_per_second:.3f} MP/s")
    table.add_row("device", f"{summary.device} ({summary.precision})")
    table.add_row("tile", _tile_text(summary.tile))
    if summary.tone_tile != summary.tile:
        table.add_row("tile (haze, low light)", _tile_text(summary.tone_tile))
    if summary.views > 1:
        capped = "".join(f", {name} passes {views}" for name, views in summary.capped.items())
        table.add_row("self-ensemble", f"{summary.views} views{capped}")
    table.add_row("haze guide", f"{summary.haze_guide} px thumbnail" if summary.haze_guide else "off")
    table.add_row("prompt", summary.prompt)
    if summary.detected:
        table.add_row("restored with", ", ".join(f"{label} {count}" for label, count in summary.detected.items()))
    console.print(table)
    doubtful = summary.low_confidence
    if doubtful:
        listing = Table(title=f"low confidence ({len(doubtful)}): check these, or name the degradation with -d",
                        title_style="yellow")
        listing.add_column("input", overflow="fold")
        listing.add_column("restored with")
        listing.add_column("probabilities", overflow="fold")
        for result in doubtful[:MAX_ROWS]:
            assert result.detection is not None
            top = list(result.detection["probabilities"].items())[:3]
            listing.add_row(result.source, result.degradation, ", ".join(f"{name} {p:.0%}" for name, p in top))
        console.print(listing)
    for status, colour in (("failed", "red"), ("skipped", "yellow")):
        rows = [result for result in summary.results if result.status == status]
        if not rows:
            continue
        listing = Table(title=f"{status} ({len(rows)})", title_style=colour, show_lines=False)
        listing.add_column("input", overflow="fold")
        listing.add_column("reason", overflow="fold")
        for result in rows[:MAX_ROWS]:
            listing.add_row(result.source, result.reason)
        if len(rows) > MAX_ROWS:
            listing.add_row(f"... and {len(rows) - MAX_ROWS} more", "(--json lists them all)")
        console.print(listing)
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if summary.count("processed"):
        console.print(f"restored images are in {output}", highlight=False)


def restore(
    inputs: Annotated[list[str], typer.Argument(
        help="Image files, folders and glob patterns (quote a pattern such as 'shots/**/*.jpg' to let dfpir "
             "expand it). PNG, JPEG, TIFF, BMP and WebP; 8- or 16-bit; grey, RGB or RGBA.",
        show_default=False)],
    degradation: Annotated[str | None, typer.Option(
        "--degradation", "-d", help="What to remove: noise15, noise25, noise50, rain, haze, blur, lowlight, "
                                    "camnoise (a camera's noise: the default model has it), or an alias (noisy, "
                                    "rainy, hazy, foggy, blurry, dark, low-light, camera-noise...); `dfpir info` "
                                    "lists them all. Several joined by + run one pass each in that order "
                                    "(noise+haze). auto (the default without --prompt): the degradation detector "
                                    "picks per photo, chaining two when both are likely; photos it finds clean "
                                    "are copied unchanged.")] = None,
    prompt: Annotated[str | None, typer.Option(
        "--prompt", help="A free-text description of the degradation instead of --degradation; encoded with "
                         "CLIP ViT-B/32 (needs its weights locally, see `dfpir fetch-weights --clip`) and only "
                         "for checkpoints whose prompts were made by CLIP.")] = None,
    weights: WeightsOpt = None,
    detector: DetectorOpt = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Folder for the restored images; sub-folders of the inputs are kept with "
                               "--recursive. Inputs are never overwritten.")] = Path("restored"),
    suffix: Annotated[str, typer.Option(
        "--suffix", help="Added to each output name before the extension, e.g. _restored.")] = "",
    ext: Annotated[str | None, typer.Option(
        "--ext", help="Output format: png, jpg, tif, bmp or webp (default: the input's own). 16-bit inputs stay "
                      "16-bit in png and tif; alpha needs png, tif, webp or bmp.")] = None,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Also restore the images in sub-folders of folder inputs.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite/--skip-existing", help="Replace existing outputs, or skip them (the default, so an "
                                            "interrupted batch resumes where it stopped).")] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    views: SelfEnsembleOpt = 1,
    haze_guide: HazeGuideOpt = None,
    tile: Annotated[int | None, typer.Option(
        "--tile", help="Tile side in pixels for large images (rounded down to a multiple of 8); 0 runs every "
                       "image whole. Default: the largest tile the device's free memory allows, so small images run "
                       "whole and large ones never run out of memory; on CPU at most 512 (faster) except for haze "
                       "and low light, whose tone tiles would each set for themselves.",
        show_default=False)] = None,
    tile_overlap: Annotated[int, typer.Option(
        "--tile-overlap", help="Pixels shared by neighbouring tiles, blended smoothly.")] = DEFAULT_OVERLAP,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Tiles per forward pass (default: 4 on a GPU, 1 on CPU).", show_default=False)] = None,
    shard: Annotated[str | None, typer.Option(
        "--shard", help="I/N: restore only share I (from 0) of N of the files, for job arrays without torchrun "
                        "(SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT). Every file is in exactly "
                        "one share; each job reports its own share.", show_default=False)] = None,
    backend: Annotated[str, typer.Option(
        "--backend", help="What runs the network: pytorch, or onnxruntime (CPU, fp32; needs pip install "
                          "'dfpir-cli\\[onnx]'; the network is exported once per checkpoint and cached). On the idle 2-core "
                          "development CPU it was 2.3-2.6x slower than pytorch in bf16 (a 12 MP photo: 119 s against "
                          "48-53 s); it held up better where other processes shared the cores (docs/speed.md).")] = "pytorch",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore photos: remove noise, rain, haze, motion blur or darkness, named by --degradation or detected.

    Examples:

      dfpir restore photos/ -o restored/   (auto: each photo's degradation detected; `dfpir detect` shows it)

      dfpir restore photos/ --degradation hazy --weights ckpt/ -o restored/

      dfpir restore night/ --degradation noise+lowlight   (two passes: denoise, then brighten)

      dfpir restore 'shots/**/*.png' -d noisy -w owner/dfpir-5d --suffix _clean --recursive

      torchrun --nproc_per_node 8 --no-python dfpir restore photos/ -d hazy   (one GPU per process, each file once;
      one merged summary and --json from process 0; also across nodes with torchrun's --nnodes)

    Exit codes:

      0  every image restored (or skipped because its output exists)

      1  some image failed; the others were still restored

      2  usage error: bad option, unknown degradation, nothing to restore, an output that would overwrite an input
    """
    distributed = Distributed()
    with handle_errors():
        try:
            if tile_overlap < 0:
                raise InputError(f"--tile-overlap {tile_overlap}: the overlap cannot be negative")
            share = parse_shard(shard) if shard is not None else None
            if output.exists() and not output.is_dir():
                raise InputError(f"-o {output} is a file: -o names the folder the restored images are written to. "
                                 "Choose a folder (it is created when missing).")
            files, problems = collect_inputs(inputs, recursive, exclude=output)
            if not files:
                reasons = "\n  ".join(problem.reason for problem in problems)
                raise InputError(f"nothing to restore:\n  {reasons}")
            check_outputs_spare_inputs(files, output, suffix, ext)
            check_precision(precision)  # an unknown precision is a usage error before loading
            check_views(views)
            distributed, torch_device = init_distributed(device)
            if share is not None and distributed.active:
                raise InputError("--shard splits the files between separate jobs; under torchrun the processes "
                                 "already split them: use one or the other")
            index, count = share or (distributed.rank, distributed.world_size)
            quiet = quiet or not distributed.is_main
            summary = _restore_share(files, problems if index == 0 else [], index, count,
                                     weights=weights, detector=detector, device=torch_device,
                                     degradation=degradation, prompt=prompt,
                                     output=output, suffix=suffix, ext=ext, overwrite=overwrite, precision=precision,
                                     tile=tile, tile_overlap=tile_overlap, batch_size=batch_size, views=views,
                                     haze_guide=haze_guide, backend=backend, quiet=quiet or as_json)
            if distributed.active:
                parts: list[RestoreSummary | None] = [None] * distributed.world_size
                dist.all_gather_object(parts, summary)
                summary = merge_summaries([part for part in parts if part is not None], files)
            if distributed.is_main:
                if as_json:
                    typer.echo(json.dumps(summary.to_json(), indent=2))
                elif quiet:
                    _print_quiet_summary(summary, output)
                else:
                    _print_summary(summary, output)
        finally:
            shutdown_distributed()
    raise typer.Exit(summary.exit_code)


def _restore_share(files: list[InputFile], problems: list[InputProblem], index: int, count: int, *,
                   weights: str | None, detector: Path | None, device: torch.device, degradation: str | None,
                   prompt: str | None, output: Path, suffix: str, ext: str | None, overwrite: bool, precision: str,
                   tile: int | None, tile_overlap: int, batch_size: int | None, views: int, haze_guide: int | None,
                   backend: str, quiet: bool) -> RestoreSummary:
    """Restore share ``index`` of ``count`` of the files (all of them when count is 1)."""
    mine = shard_files(files, output, suffix, ext, index, count) if count > 1 else files
    checkpoint = resolve_weights(weights, device)
    code, label, chooser = _prompts(checkpoint, degradation, prompt, detector)
    restorer = Restorer(checkpoint, code, device, precision, tile, tile_overlap, batch_size,
                        measuring=None if quiet else announce_bf16_check, views=views, name=label,
                        haze_guide=haze_guide, backend=backend)
    if not quiet and err_console.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=err_console) as progress:
            summary = restore_files(mine, problems, restorer, output, suffix, ext, overwrite,
                                    _ProgressListener(progress, len(mine), views), chooser)
    else:
        summary = restore_files(mine, problems, restorer, output, suffix, ext, overwrite, chooser=chooser)
    summary.prompt = label
    if count > 1 and not quiet:
        err_console.print(f"[dim]share {index}/{count}: {len(mine)} of {len(files)} file(s)[/]", highlight=False)
    return summary


def _prompts(checkpoint, degradation: str | None, prompt: str | None,
             detector: Path | None) -> tuple[torch.Tensor | None, str, Chooser | None]:
    """(code, label, chooser): one prompt for all photos, a chain of passes, or auto (the detector per photo)."""
    auto = degradation is not None and degradation.strip().lower() == "auto"
    if auto and prompt is not None:
        raise InputError("--degradation auto detects the degradation; --prompt names it: pass one or the other")
    if auto or (degradation is None and prompt is None):
        return None, "auto (detected per photo)", auto_chooser(Detector.load(detector), checkpoint)
    if degradation is not None and "+" in degradation:
        names = parse_chain(degradation)
        for name in names:
            checkpoint.prompts.code(name)  # a name this checkpoint lacks stops here, before any work
        return None, " then ".join(names), chain_chooser(names)
    code, label = prompt_code(checkpoint, degradation, prompt)
    return code, label, None
