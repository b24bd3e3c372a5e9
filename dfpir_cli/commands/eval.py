"""`dfpir eval`: PSNR/SSIM on the paper's benchmarks, any paired folders, or the built-in synthetic benchmark."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import torch
import torch.distributed as dist
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..base.distributed import init_distributed, shutdown_distributed
from ..base.imageio import write_atomic
from ..base.precision import check_precision, precision_name
from ..data.folder import data_dir, dataset_folder, suite_root
from ..data.photos import SHIPPED_PHOTOS, SYNTHETIC_SIZE
from ..data.test_sets import (
    DATASET_NAMES,
    DEFAULT_SIGMAS,
    SUITE_FOLDERS,
    TestSet,
    find_all,
    find_dataset,
    find_paired,
    find_suite,
    synthetic_sets,
)
from ..detect import Detector
from ..errors import InputError
from ..evaluate.benchmark import CSV_COLUMNS, EvalOptions, SetResult, csv_rows, evaluate_set, merge_shares, paper_table, summary
from ..evaluate.classic import classic_method
from ..evaluate.metrics import MetricOptions
from ..model import DFPIR, PRESETS
from ..restore.ensemble import check_views
from ..restore.precision_check import inference_precision
from ..weights.checkpoint import Checkpoint, PromptBank
from ..weights.prompts import DEGRADATIONS, FIVE_TASK, random_codes, resolve_degradation
from ..weights.resolve import resolve_weights
from .common import (
    DeviceOpt,
    EvalHazeGuideOpt,
    JsonOpt,
    PrecisionOpt,
    QuietOpt,
    SelfEnsembleOpt,
    WeightsOpt,
    announce_bf16_check,
    console,
    err_console,
    handle_errors,
    is_interactive,
)
from .detect import DetectorOpt

_SUITE_HELP = ", ".join(f"{name} ({' or '.join(SUITE_FOLDERS[name][:2])})"
                        for name in ("SOTS", "Rain100L", "CBSD68", "GoPro", "LOL"))
EVAL_HELP = "\n\n".join((
    "Score a checkpoint with PSNR/SSIM on the paper's test sets, on your own pairs, or on a built-in synthetic "
    "benchmark that needs no download.",
    "[bold]Paper datasets[/] (--dataset with --root): SOTS (outdoor; input/NNNN_a_b.png + target/NNNN.png, or "
    "hazy/ + gt/, or same-name IN/ + GT/), Rain100L (input/rain-N.png + target/norain-N.png, or same names), "
    "CBSD68 and Urban100 (a folder of clean images; noise added per --sigma with numpy seed 0, as the paper), "
    "GoPro (blur/ + sharp/, at the root or per scene folder), LOL (low/ + high/, also in eval15/).",
    "[bold]Without --root[/], --dataset NAME and --tasks look in the datasets folder: $DFPIR_DATA, else "
    "~/.cache/dfpir/data, one sub-folder per dataset (SOTS/, Rain100L/, CBSD68/, Urban100/, GoPro/, LOL/); a "
    "missing set is reported with where to download it and where its files go.",
    f"[bold]--tasks 3|5[/] runs the paper's whole suite from one --root holding the sub-folders {_SUITE_HELP}. "
    "3 tasks: SOTS, Rain100L, CBSD68 sigma 15/25/50; 5 tasks: SOTS, Rain100L, CBSD68 sigma 25, GoPro, LOL.",
    "[bold]--dataset all[/] scores every one of those datasets found in a sub-folder of --root (or of the datasets "
    "folder), for example the real test splits: dfpir eval --dataset all --root ../shared/realsets --classic.",
    "[bold]--classic[/] adds a column for a classic, non-learned method of each degradation (non-local means, a "
    "5x5 median, the dark channel prior, Richardson-Lucy, CLAHE: dfpir_cli.evaluate.classic), so the report shows what "
    "the learned model adds over the textbook; non-local means takes seconds per image.",
    "[bold]--dataset paired[/] --input-dir A --target-dir B --degradation NAME pairs files by name and "
    "reports the files left unpaired.",
    f"[bold]--dataset synthetic[/] degrades the clean photos shipped with scikit-image ({', '.join(SHIPPED_PHOTOS)}; "
    f"or your own with --images DIR), scaled and centre-cropped to {SYNTHETIC_SIZE}x{SYNTHETIC_SIZE} (--size), "
    "with seeded synthetic noise (sigma 15/25/50), rain streaks, haze (atmospheric scattering), motion blur and "
    "low light (dfpir_cli.data.synthesis), and scores the degraded input beside the model.",
    "The protocol is the paper's unless told otherwise: both images centre-cropped to a multiple of 16, the "
    "restored image clipped to [0, 1], PSNR/SSIM on full RGB with scikit-image (uniform 7x7 SSIM window). "
    "The report states the conventions used. For the paper's datasets the paper's numbers (Tables 1 and 2) "
    "are shown beside ours: the 5-task table when the model knows blur or low light, else the 3-task one "
    "(--tasks picks it).",
    "[bold]--degradation auto[/] also restores every input with the prompts the degradation detector picks for it "
    "(as `dfpir restore --degradation auto` does) and reports that PSNR/SSIM beside the oracle prompt's, with how "
    "often the detector picked the oracle prompt.",
    "[bold]Several processes[/]: `torchrun --nproc_per_node N --no-python dfpir eval ...` splits every test set's "
    "images between the processes (one GPU each; gloo on CPUs) and process 0 reports the gathered results, "
    "the same as one process.",
    "Exit status: 0 when images were scored (files that fail are reported and skipped), 1 when none could be, "
    "2 on a usage, checkpoint or layout error.",
))


def _random_checkpoint(preset: str) -> Checkpoint:
    """A randomly initialised network of ``preset`` with seeded random prompt codes: pipeline smoke tests only."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    torch.manual_seed(0)
    config = PRESETS[preset]
    model = DFPIR(config).eval()
    prompts = PromptBank(FIVE_TASK, tuple(DEGRADATIONS[n].text for n in FIVE_TASK),
                         random_codes(FIVE_TASK, 0, config.text_dim), "random")
    return Checkpoint(model, prompts, {"untrained_preset": preset})


def _test_sets(dataset: str | None, root: Path | None, tasks: int | None, input_dir: Path | None,
               target_dir: Path | None, degradations: list[str], sigmas: list[int], images: Path | None,
               size: int, seed: int, checkpoint: Checkpoint) -> list[TestSet]:
    if tasks is not None:
        if dataset is not None:
            raise InputError("give either --tasks (the paper's whole suite) or --dataset, not both")
        return find_suite(root if root is not None else suite_root(tasks), tasks)
    if dataset is None:
        raise InputError(f"say what to evaluate: --dataset ({', '.join(DATASET_NAMES)}) or --tasks 3|5")
    name = dataset.lower()
    if name == "synthetic":
        wanted = [resolve_degradation(d) for d in degradations] or [
            n for n in checkpoint.prompts.names if n in DEGRADATIONS]
        return synthetic_sets(list(dict.fromkeys(wanted)), images, seed, size)
    if name == "all":
        return find_all(root if root is not None else data_dir(), sigmas or DEFAULT_SIGMAS)
    if name == "paired":
        if input_dir is None or target_dir is None or len(degradations) != 1:
            raise InputError("--dataset paired needs --input-dir, --target-dir and one --degradation "
                             "(the prompt that restores the inputs)")
        return [find_paired(input_dir, target_dir, resolve_degradation(degradations[0]))]
    sets = find_dataset(dataset, root if root is not None else dataset_folder(dataset), sigmas or DEFAULT_SIGMAS)
    if degradations:
        if len(degradations) != 1:
            raise InputError("give one --degradation to override the dataset's prompt")
        override = resolve_degradation(degradations[0])
        sets = [TestSet(s.dataset, override, s.pairs, s.layout, s.noise_sigma, s.unpaired, s.extra) for s in sets]
    return sets


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _difference(ours: float | None, paper: float | None, digits: int) -> str:
    if paper is None or ours is None or math.isnan(ours):
        return "-"
    return f"{ours - paper:+.{digits}f}"


def _pair_cell(psnr: float | None, ssim: float | None, digits: int = 4) -> str:
    return f"{_number(psnr, 2)} / {_number(ssim, digits)}"


def _render(results: list[SetResult], report: dict, title: str) -> Table:
    """One row per test set: our PSNR and SSIM, the degraded input's, and the paper's with the difference."""
    has_paper = any(result.paper for result in results)
    has_classic = any(result.has_classic for result in results)
    has_auto = any(result.detected for result in results)
    has_failures = any(result.failed for result in results)
    table = Table(title=title)
    table.add_column("test set", no_wrap=True)
    table.add_column("images", justify="right")
    if has_failures:
        table.add_column("failed", justify="right", style="yellow")
    table.add_column("PSNR", justify="right", style="bold")
    table.add_column("SSIM", justify="right", style="bold")
    table.add_column("input PSNR / SSIM", justify="right")
    if has_classic:
        table.add_column("classic PSNR / SSIM", justify="right")
    if has_auto:
        table.add_column("auto PSNR / SSIM", justify="right")
        table.add_column("auto - oracle", justify="right")
        table.add_column("oracle prompt picked", justify="right")
    if has_paper:
        table.add_column("paper PSNR / SSIM", justify="right")
        table.add_column("ours - paper", justify="right")

    def add(label: str, count: str, failed: str, mean: Mapping[str, float | None], paper: tuple[float, float] | None,
            style: str | None = None, picked: str = "") -> None:
        row = [label, count] + ([failed] if has_failures else [])
        row += [_number(mean["psnr"], 2), _number(mean["ssim"], 4), _pair_cell(mean["input_psnr"], mean["input_ssim"])]
        if has_classic:
            row += [_pair_cell(mean["classic_psnr"], mean["classic_ssim"])]
        if has_auto:
            row += [_pair_cell(mean.get("auto_psnr"), mean.get("auto_ssim")),
                    _difference(mean.get("auto_psnr"), mean["psnr"], 2), picked]
        if has_paper:
            row += [_pair_cell(*paper, digits=3) if paper else "-",
                    f"{_difference(mean['psnr'], paper[0], 2)} / {_difference(mean['ssim'], paper[1], 3)}"
                    if paper else "-"]
        table.add_row(*row, style=style)

    for result in results:
        means = {key: result.mean(key) for key in ("psnr", "ssim", "input_psnr", "input_ssim", "classic_psnr",
                                                   "classic_ssim", "auto_psnr", "auto_ssim")}
        share = result.oracle_share(result.test_set.degradation) if has_auto else math.nan
        picked = "" if math.isnan(share) else f"{share:.0%}"
        add(result.test_set.label, str(len(result.scored)), str(len(result.failed)), means, result.paper, picked=picked)
    if len(results) > 1:
        mean = report["average"]
        paper = (mean["paper_psnr"], mean["paper_ssim"]) if mean["paper_psnr"] is not None else None
        add("average", "", "", mean, paper, style="bold")
    return table


def eval_command(
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help=f"What to evaluate: {', '.join(DATASET_NAMES)} (case-insensitive).",
        show_default=False)] = None,
    root: Annotated[Path | None, typer.Option(
        "--root", help="The dataset's folder (with --tasks: the folder holding each dataset in a sub-folder). "
                       "Default: the datasets folder ($DFPIR_DATA, else ~/.cache/dfpir/data).",
        show_default=False)] = None,
    tasks: Annotated[int | None, typer.Option(
        "--tasks", help="3 or 5: run the paper's 3- or 5-task suite from --root (or the datasets folder) and "
                       "compare with its Table 1 or 2.",
        show_default=False)] = None,
    weights: WeightsOpt = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help=f"Evaluate a randomly initialised network of this preset ({', '.join(PRESETS)}) instead "
                         "of --weights: a smoke test of the pipeline and its speed; its scores mean nothing.",
        show_default=False)] = None,
    input_dir: Annotated[Path | None, typer.Option(
        "--input-dir", help="--dataset paired: the degraded images.", show_default=False)] = None,
    target_dir: Annotated[Path | None, typer.Option(
        "--target-dir", help="--dataset paired: the clean images, with the inputs' file names (any extension).",
        show_default=False)] = None,
    degradation: Annotated[list[str] | None, typer.Option(
        "--degradation", "-g", help="The prompt for --dataset paired (required) or to override a dataset's; "
                                    "with --dataset synthetic, which degradations to run (repeatable; default: "
                                    "every one the model knows). auto (added to the others): also score each "
                                    "input restored with the prompts the degradation detector picks.",
                                    show_default=False)] = None,
    detector_path: DetectorOpt = None,
    sigma: Annotated[list[int] | None, typer.Option(
        "--sigma", help="Noise levels for CBSD68/Urban100, 8-bit scale (repeatable; default 15, 25, 50).",
        show_default=False)] = None,
    images: Annotated[Path | None, typer.Option(
        "--images", help="--dataset synthetic: use the clean photos in this folder instead of scikit-image's.",
        show_default=False)] = None,
    size: Annotated[int, typer.Option(
        "--size", help="--dataset synthetic: scale and centre-crop each photo to this square side (0: as is).",
        min=0)] = SYNTHETIC_SIZE,
    seed: Annotated[int, typer.Option("--seed", help="--dataset synthetic: seed of the degradations.")] = 0,
    y_channel: Annotated[bool, typer.Option(
        "--y-channel", help="Score the BT.601 luma (Y of YCbCr) instead of full RGB.")] = False,
    ssim_gaussian: Annotated[bool, typer.Option(
        "--ssim-gaussian", help="SSIM of Wang et al.: Gaussian window sigma 1.5, population covariance "
                                "(default: scikit-image's uniform 7x7 window, as the paper).")] = False,
    crop_border: Annotated[int, typer.Option(
        "--crop-border", help="Ignore this many pixels at each border when scoring.", min=0)] = 0,
    quantize: Annotated[bool, typer.Option(
        "--quantize", help="Round restored images to 8 bits before scoring (as scoring saved PNGs).")] = False,
    tile: Annotated[int | None, typer.Option(
        "--tile", help="Tile side in pixels; 0: always the whole image. Default: the whole image when it fits the "
                       "device's memory (as the paper did), else the largest tile that fits.", min=0,
        show_default=False)] = None,
    overlap: Annotated[int, typer.Option("--overlap", help="Overlap between tiles, in pixels.", min=0)] = 32,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Tiles per forward pass.", min=1)] = 1,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    views: SelfEnsembleOpt = 1,
    haze_guide: EvalHazeGuideOpt = 0,
    classic: Annotated[bool, typer.Option(
        "--classic", help="Also score a classic, non-learned method of each degradation (see above).")] = False,
    csv_path: Annotated[Path | None, typer.Option(
        "--csv", help="Write per-image results (PSNR/SSIM of the restored, the degraded and, with --classic, the "
                      "classic method's image) to this CSV.",
        show_default=False)] = None,
    json_output: JsonOpt = False,
    save_dir: Annotated[Path | None, typer.Option(
        "--save-dir", help="Keep the restored images here, one sub-folder per test set (PNG, 8-bit).",
        show_default=False)] = None,
    quiet: QuietOpt = False,
) -> None:
    with handle_errors():
        wanted = list(degradation or [])
        auto = any(name.strip().lower() == "auto" for name in wanted)
        wanted = [name for name in wanted if name.strip().lower() != "auto"]
        detector = Detector.load(detector_path) if auto else None
        if weights is not None and preset is not None:
            raise InputError("give --weights or --preset, not both")
        if tasks is not None and tasks not in (3, 5):
            raise InputError(f"--tasks must be 3 or 5, not {tasks}")
        check_precision(precision)
        check_views(views)
        distributed, torch_device = init_distributed(device)
        quiet = quiet or not distributed.is_main
        checkpoint = _random_checkpoint(preset) if preset else resolve_weights(weights, torch_device)
        checkpoint.model.to(torch_device).eval()
        sets = _test_sets(dataset, root, tasks, input_dir, target_dir, wanted, list(sigma or []),
                          images, size, seed, checkpoint)
        for test_set in sets:  # fail on an unknown prompt before any work
            checkpoint.prompts.code(test_set.degradation)
        choice = inference_precision(checkpoint, torch_device, precision,
                                     None if quiet or json_output else announce_bf16_check)
        if choice.note:
            err_console.print(f"[yellow]note:[/] {choice.note}", highlight=False, soft_wrap=True)
        options = EvalOptions(MetricOptions(y_channel, ssim_gaussian, crop_border, quantize=quantize),
                              tile, overlap, batch_size, save_dir, precision_name(choice.dtype), classic,
                              detector, views, haze_guide)
        table_number = paper_table(checkpoint, tasks)
        compare = table_number if any(s.dataset in SUITE_FOLDERS for s in sets) else None
        out = err_console if json_output else console
        for test_set in sets:
            if test_set.unpaired and not quiet:
                shown = "\n  ".join(test_set.unpaired[:20])
                more = f"\n  ... and {len(test_set.unpaired) - 20} more" if len(test_set.unpaired) > 20 else ""
                err_console.print(f"[yellow]{test_set.label}: {len(test_set.unpaired)} file(s) left unpaired:[/]\n"
                                  f"  {shown}{more}", highlight=False)

        results: list[SetResult] = []
        total = sum(len(s.pairs[distributed.rank::distributed.world_size]) for s in sets)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console, disable=quiet or not is_interactive(), transient=True) as progress:
            bar = progress.add_task("evaluating", total=total)
            for test_set in sets:
                progress.update(bar, description=test_set.label)
                results.append(evaluate_set(checkpoint, test_set, options, compare,
                                            progress=lambda _set, _name: progress.advance(bar),
                                            share=(distributed.rank, distributed.world_size)))
        if distributed.active:
            shares: list[list[SetResult] | None] = [None] * distributed.world_size
            dist.all_gather_object(shares, results)
            results = merge_shares([share for share in shares if share is not None])
            shutdown_distributed()
            if not distributed.is_main:
                raise typer.Exit(0 if any(result.scored for result in results) else 1)

        report = summary(results, options, compare, weights or (f"untrained preset {preset}" if preset else None))
        for result in results:
            for image in result.failed:
                err_console.print(f"[yellow]{result.test_set.label}: {image.name} skipped:[/] {image.error}",
                                  highlight=False, soft_wrap=True)
        if csv_path is not None:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(csv_rows(results))
            write_atomic(csv_path, buffer.getvalue().encode())
        title = "dfpir eval" + (f" vs paper Table {1 if compare == 3 else 2} ({compare} tasks)" if compare else "")
        if preset:
            title += f" - UNTRAINED {preset} preset (random weights)"
        if views > 1:
            title += f" - self-ensemble of {views} views (the paper: 1)"
        if haze_guide:
            title += f" - haze guided by {haze_guide} px thumbnails (the paper: whole)"
        if json_output:
            typer.echo(json.dumps(report, indent=2))
        else:
            out.print(_render(results, report, title))
            capped = {result.test_set.degradation: result.views for result in results if result.views < views}
            ensemble = f"; self-ensemble of {views} views" if views > 1 else ""
            ensemble += "".join(f" ({name}: {count})" for name, count in sorted(capped.items()))
            ensemble += f"; haze guided by a {haze_guide} px thumbnail" if haze_guide else ""
            out.print(f"conventions: {report['conventions']['description']}; {options.precision} on {torch_device}"
                      f"{ensemble}", highlight=False)
            for note in report["notes"]:
                out.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
            if not quiet:
                layouts: dict[str, list[str]] = {}
                for test_set in sets:
                    layouts.setdefault(test_set.layout, []).append(test_set.label)
                for layout, labels in layouts.items():
                    which = "data" if len(layouts) == 1 else ", ".join(labels)
                    out.print(f"[dim]{which}: {layout}[/]", highlight=False)
            methods = {result.test_set.degradation: classic_method(result.test_set.degradation)
                       for result in results if result.has_classic}
            if methods:
                out.print("classic: " + "; ".join(dict.fromkeys(methods.values())), highlight=False, soft_wrap=True)
            if csv_path is not None:
                out.print(f"per-image results: {csv_path}")
            if save_dir is not None:
                out.print(f"restored images: {save_dir}")
        if not any(result.scored for result in results):
            raise typer.Exit(1)


eval_command.__doc__ = EVAL_HELP
