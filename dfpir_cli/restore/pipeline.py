"""Batch restoration: inputs to outputs, one file at a time, never stopping for one bad file.

``collect_inputs`` turns files, folders and globs into a list of images (each with the sub-path its output
keeps); ``plan_output`` names each output and refuses any that would land on an input; ``Restorer``
holds the network, the prompt code, the device, the precision and the tiling, makes each photo's
:class:`~dfpir_cli.restore.plan.RestorePlan` and runs it (:func:`run_plan`); ``restore_files`` runs the
batch, reporting to a :class:`RestoreListener`, and returns a :class:`RestoreSummary`. Nothing here prints.
A :data:`Chooser` picks the prompts per photo: a chain of passes (``haze+noise``) or what the degradation
detector finds (``--degradation auto``, :func:`auto_chooser`); a photo given no prompt is copied unchanged.
Existing outputs are skipped unless ``overwrite``, so a killed batch resumes where it stopped.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..base.imageio import FORMATS, IMAGE_SUFFIXES, output_format, read_image, write_atomic, write_image
from ..base.precision import PRECISIONS, FiniteGuard, Reruns, autocast, check_precision, precision_name
from ..detect import AutoPolicy, Detection, Detector, known_families, plan_prompts
from ..errors import DfpirError, InputError
from ..model import DFPIR
from ..weights.checkpoint import Checkpoint, prompt_weights_applied
from ..weights.export import ONNX_OPSET, OnnxRuntimeForward
from ..weights.prompts import ClipTextEncoder
from .ensemble import check_views, self_ensemble
from .plan import TONE_TILE_STEP, Pass, Planner, RestorePlan, haze_guide_for
from .precision_check import cache_path, fingerprint, inference_precision
from .tiling import ProgressCallback, _free_device_memory, auto_tile_size, tiled_restore

Status = Literal["processed", "clean", "skipped", "failed"]  # clean: detected clean, copied unchanged
DEFAULT_OVERLAP = 32
BACKENDS = ("pytorch", "onnxruntime")  # what runs the network: PyTorch, or ONNX Runtime (CPU, fp32; the onnx extra)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    path: Path  # the image to read
    relative: Path  # its place under the output folder (sub-folders kept with --recursive)


@dataclass(frozen=True)
class InputProblem:
    spec: str  # what the user typed
    reason: str


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _scan_folder(folder: Path, recursive: bool, exclude: Path | None) -> Iterator[Path]:
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if recursive and not (exclude is not None and entry.resolve() == exclude):
                yield from _scan_folder(entry, recursive, exclude)
        elif entry.is_file() and _is_image_name(entry):
            yield entry


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: outputs keep the path below it."""
    parts = Path(pattern).parts
    fixed = [part for part in parts[:next(i for i, p in enumerate(parts) if _GLOB_CHARS & set(p))]]
    return Path(*fixed) if fixed else Path(".")


def collect_inputs(specs: list[str], recursive: bool = False,
                   exclude: Path | None = None) -> tuple[list[InputFile], list[InputProblem]]:
    """Expand files, folders and globs into images; what cannot be expanded becomes an :class:`InputProblem`.

    A named file is always tried (and fails clearly if it is no image); inside folders only files with an
    image suffix are taken (sidecar files are ignored). ``exclude`` (the output folder) is never scanned,
    so a rerun does not restore its own outputs.
    """
    exclude = exclude.resolve() if exclude is not None else None
    files: list[InputFile] = []
    problems: list[InputProblem] = []
    seen: set[Path] = set()

    def add(path: Path, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(InputFile(path, relative))

    def add_folder(spec: str, folder: Path) -> None:
        found = list(_scan_folder(folder, recursive, exclude))
        if not found:
            has_subfolders = any(entry.is_dir() and not entry.name.startswith(".") for entry in folder.iterdir())
            hint = " It has sub-folders: add --recursive to restore the images in them." if (
                has_subfolders and not recursive) else ""
            problems.append(InputProblem(spec, f"no images (PNG, JPEG, TIFF, BMP, WebP) in folder {folder}.{hint}"))
        for path in found:
            add(path, path.relative_to(folder))

    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            add_folder(spec, path)
        elif path.is_file():
            add(path, Path(path.name))
        elif _GLOB_CHARS & set(spec):
            root = _glob_root(spec)
            matches = sorted(Path(match) for match in glob.glob(str(path), recursive=True))
            matches = [m for m in matches if (m.is_dir() or (m.is_file() and _is_image_name(m)))
                       and not (exclude is not None and m.resolve().is_relative_to(exclude))]
            if not matches:
                problems.append(InputProblem(spec, f"no images match the pattern {spec}"))
            for match in matches:
                if match.is_dir():
                    add_folder(spec, match)
                else:
                    add(match, match.relative_to(root) if match.is_relative_to(root) else Path(match.name))
        elif path.exists():
            problems.append(InputProblem(spec, f"{spec} is neither a file nor a folder"))
        else:
            problems.append(InputProblem(spec, f"{spec} does not exist"))
    return files, problems


def plan_output(item: InputFile, output_dir: Path, suffix: str = "", ext: str | None = None) -> Path:
    """Where ``item``'s restored image goes: same sub-path, ``suffix`` added to the name, ``ext`` if given."""
    if ext:
        extension = "." + ext.lower().lstrip(".")
        if extension not in FORMATS:
            raise InputError(f"--ext {ext}: dfpir writes {', '.join(sorted({s.lstrip('.') for s in FORMATS}))}")
    else:
        extension = item.path.suffix if item.path.suffix.lower() in FORMATS else ".png"
    name = f"{item.relative.stem}{suffix}{extension}"
    return output_dir / item.relative.parent / name


def check_outputs_spare_inputs(files: list[InputFile], output_dir: Path, suffix: str, ext: str | None) -> None:
    """Refuse a run in which some output would overwrite an input (e.g. --output is the input folder, no suffix)."""
    inputs = {item.path.resolve() for item in files}
    for item in files:
        target = plan_output(item, output_dir, suffix, ext).resolve()
        if target in inputs:
            raise InputError(
                f"the output for {item.path} would be {target}, which is an input: dfpir never overwrites its "
                "inputs. Choose another --output folder, or add a --suffix (e.g. --suffix _restored).")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N): this job's share of the files, 0 <= I < N."""
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        shard = (-1, 0)
    if not 0 <= shard[0] < shard[1]:
        raise InputError(f"--shard {text}: write I/N with 0 <= I < N, e.g. --shard 0/4 for the first of 4 jobs "
                         "(SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return shard


def shard_files(files: list[InputFile], output_dir: Path, suffix: str, ext: str | None, index: int,
                count: int) -> list[InputFile]:
    """Share ``index`` of ``count`` of the files: every file in exactly one share, round-robin in input order.

    Files that would write the same output go to the same share, so the one that comes first still wins
    and the others fail as they would in one process.
    """
    groups: dict[Path, int] = {}
    mine = []
    for item in files:
        group = groups.setdefault(plan_output(item, output_dir, suffix, ext).resolve(), len(groups))
        if group % count == index:
            mine.append(item)
    return mine


def merge_summaries(parts: list[RestoreSummary], files: list[InputFile]) -> RestoreSummary:
    """One summary of the shares of a batch: problems first, then the files in input order."""
    merged = RestoreSummary(device=parts[0].device, precision=parts[0].precision, tile=parts[0].tile,
                            tone_tile=parts[0].tone_tile, haze_guide=parts[0].haze_guide, views=parts[0].views,
                            prompt=parts[0].prompt, seconds=max(part.seconds for part in parts))
    for part in parts:
        counted = part.reruns.notes()  # said again below with every share's counts added up
        merged.notes += [note for note in part.notes if note not in merged.notes and note not in counted]
        merged.capped.update(part.capped)
        merged.reruns.add(part.reruns)
    merged.notes += merged.reruns.notes()
    results = [result for part in parts for result in part.results]
    order = {str(item.path): position for position, item in enumerate(files)}
    merged.results = sorted(results, key=lambda result: (result.source in order, order.get(result.source, 0)))
    if len({part.device for part in parts}) > 1:
        merged.device = ", ".join(dict.fromkeys(part.device for part in parts))
    return merged


def prompt_code(checkpoint: Checkpoint, degradation: str | None, prompt: str | None,
                clip_weights: str | Path | None = None) -> tuple[torch.Tensor, str]:
    """The (text_dim,) code to restore with, from a degradation name or a free-text prompt (CLIP), and its label."""
    if (degradation is None) == (prompt is None):
        raise InputError("pass exactly one of --degradation NAME (e.g. --degradation hazy) or --prompt TEXT")
    if degradation is not None:
        return checkpoint.prompts.code(degradation), checkpoint.prompts.names[checkpoint.prompts.index(degradation)]
    assert prompt is not None
    if not prompt.strip():
        raise InputError("--prompt is empty: describe the degradation, e.g. --prompt 'Hazy degradation with normal haze'")
    if checkpoint.prompts.encoder != "clip":
        raise InputError(
            f"this checkpoint's prompt codes were not made by CLIP (encoder: {checkpoint.prompts.encoder}), so a "
            "free-text --prompt means nothing to it. Use --degradation with one of: "
            f"{', '.join(checkpoint.prompts.names)}")
    code = ClipTextEncoder.load(clip_weights).encode([prompt])[0]
    if code.shape[0] != checkpoint.config.text_dim:
        raise InputError(f"CLIP gives {code.shape[0]}-d codes but this network expects {checkpoint.config.text_dim}-d")
    return code, f"prompt: {prompt}"


class Restorer:
    """The network and everything a forward pass needs: prompt code, device, precision and tiling.

    It plans each photo (:meth:`plan`, a :class:`~dfpir_cli.restore.plan.RestorePlan` made by its
    :class:`~dfpir_cli.restore.plan.Planner`) and runs the plan (:meth:`run`); :meth:`restore` does both.
    """

    def __init__(self, checkpoint: Checkpoint, code: torch.Tensor | None, device: torch.device, precision: str = "fp32",
                 tile: int | None = None, overlap: int = DEFAULT_OVERLAP, batch_size: int | None = None,
                 measuring: Callable[[], None] | None = None, views: int = 1, name: str | None = None,
                 haze_guide: int | None = None, backend: str = "pytorch") -> None:
        """``precision`` auto checks (once per checkpoint, cached) that bf16 restores like fp32 before using it
        (:mod:`dfpir_cli.restore.precision_check`); ``measuring`` is called before that check runs. ``views`` > 1
        restores each image in that many mirrored and rotated views and averages them (:mod:`dfpir_cli.restore.ensemble`;
        rain passes in at most four); ``name`` is the prompt name of ``code``, when it has one; haze passes
        take their tone from a thumbnail ``haze_guide`` pixels on its longer side (0: off; None: the
        checkpoint's own, :func:`~dfpir_cli.restore.plan.haze_guide_for`). A pass whose output is not finite
        runs again in a safer precision (:class:`~dfpir_cli.base.precision.FiniteGuard`); ``guard.reruns``
        counts them. ``backend`` onnxruntime runs the network in ONNX Runtime on the CPU, in fp32
        (:class:`~dfpir_cli.weights.export.OnnxRuntimeForward`; needs the onnx extra)."""
        if backend not in BACKENDS:
            raise InputError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
        if backend == "onnxruntime" and device.type != "cpu":
            raise InputError(f"--backend onnxruntime runs on the CPU, not on {device}: pass --device cpu, or use the "
                             "pytorch backend on this device")
        if tile is not None and tile < 0:
            raise InputError(f"--tile {tile}: use a positive size, or 0 to run each image whole")
        if overlap < 0:
            raise InputError(f"--tile-overlap {overlap}: the overlap cannot be negative")
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size {batch_size}: at least 1 tile per forward pass")
        views = check_views(views)
        guide = haze_guide_for(checkpoint, haze_guide)
        self.name = name
        self.capped: dict[str, int] = {}  # prompt -> the views its passes ran in, where fewer than asked
        self.device = device
        self.model = checkpoint.model.to(device).eval()
        self.checkpoint = checkpoint
        self.onnx_guards: dict[str | None, FiniteGuard] = {}  # the onnxruntime backend's, per set of weights
        self.code = None if code is None else code.reshape(1, -1).float()  # None: a Chooser names the prompts
        self.prompts = checkpoint.prompts
        self.backend = backend
        if backend == "onnxruntime":
            check_precision(precision)
            self.dtype = torch.float32
            self.precision_note = "" if precision in ("auto", "fp32") else f"--backend onnxruntime runs fp32, not {precision}"
            # Beside the precision check's cache, under the weights' fingerprint: exported once per set of weights.
            self.guard = self._onnx_guard(None)
        else:
            choice = inference_precision(checkpoint, device, precision, measuring)
            self.dtype, self.precision_note = choice.dtype, choice.note
            self.guard = FiniteGuard(self.model, self.dtype)
        batch_size = batch_size or (1 if device.type == "cpu" else 4)
        tone_tile = tile
        if tile is None:
            free = _free_device_memory(device)
            tile = auto_tile_size(device, checkpoint.config, self.dtype, batch_size, free)
            tone_tile = auto_tile_size(device, checkpoint.config, self.dtype, batch_size, free, speed_cap=False)
            if tone_tile >= TONE_TILE_STEP:  # in steps, so that what is free at the time barely changes results
                tone_tile = tone_tile // TONE_TILE_STEP * TONE_TILE_STEP
        if tile and overlap >= tile:
            raise InputError(f"--tile-overlap {overlap} must be smaller than the tile ({tile})")
        self.planner = Planner(tile=tile or None, tone_tile=tone_tile or None, overlap=overlap, haze_guide=guide,
                               views=views, precision=precision_name(self.dtype), batch_size=batch_size,
                               multiple_of=self.model.multiple_of)

    def _onnx_guard(self, prompt: str | None) -> FiniteGuard:
        """ONNX Runtime's forward for the shared network (None) or a prompt with its own weights, exported once
        per set of weights, beside the precision check's cache under the weights' fingerprint."""
        if prompt not in self.onnx_guards:
            exported = f"{fingerprint(self.checkpoint, prompt)[:24]}-opset{ONNX_OPSET}-torch{torch.__version__}.onnx"
            cached = cache_path().parent / "onnx" / exported
            self.onnx_guards[prompt] = FiniteGuard(OnnxRuntimeForward(self.checkpoint, cached, prompt=prompt), self.dtype)
        return self.onnx_guards[prompt]

    def _forward_for(self, step: Pass) -> FiniteGuard:
        return self._onnx_guard(step.name if step.weights else None)

    @property
    def precision(self) -> str:
        return self.planner.precision

    def plan(self, height: int, width: int, names: tuple[str, ...] | None = None,
             detection: Detection | None = None) -> RestorePlan:
        """The plan of a ``height`` x ``width`` photo restored with ``names``, one pass each in this order
        (default: the restorer's code)."""
        if names is None:
            if self.code is None:
                raise InputError("no prompt to restore with: name a degradation")
            prompts = [(self.name, self.code)]
        else:
            prompts = [(name, self.prompts.code(name).reshape(1, -1).float()) for name in names]
        return self.planner.plan(height, width, prompts, detection, self.checkpoint.weights_of)

    def run(self, plan: RestorePlan, pixels: torch.Tensor, progress: ProgressCallback | None = None) -> torch.Tensor:
        """Run ``plan`` on one (3, H, W) image in [0, 1] (:func:`run_plan`); passes that ran in fewer views than
        asked are noted in ``capped``."""
        for step in plan.passes:
            if step.views < self.planner.views and step.name is not None:
                self.capped[step.name] = step.views
        forward_for = self._forward_for if self.backend == "onnxruntime" else None
        return run_plan(self.model, plan, pixels, self.device, self.guard, progress, forward_for)

    def restore(self, pixels: torch.Tensor, progress: ProgressCallback | None = None,
                names: tuple[str, ...] | None = None) -> torch.Tensor:
        """Restore one (3, H, W) image in [0, 1] with ``names`` (default: the restorer's code): plan, then run."""
        return self.run(self.plan(pixels.shape[-2], pixels.shape[-1], names), pixels, progress)


def run_plan(model: DFPIR, plan: RestorePlan, pixels: torch.Tensor, device: torch.device,
             forward: FiniteGuard | None = None, progress: ProgressCallback | None = None,
             forward_for: Callable[[Pass], FiniteGuard] | None = None) -> torch.Tensor:
    """Run ``plan``'s passes on one (3, H, W) image in [0, 1], each on the previous one's output; returns
    (3, H, W) float32 clamped to [0, 1] on the CPU (NaNs that even fp32 gave as 0: ``forward.reruns`` counts
    them). A pass whose prompt has its own weights runs with them in ``model`` (the shared ones are put back
    after it); ``forward_for(pass)``, when given, is the forward of each pass instead of ``forward`` (ONNX
    Runtime: a graph per set of weights). ``progress(done, total)`` counts forward passes over the whole plan.
    No I/O, no printing.
    """
    dtype = PRECISIONS[plan.precision]
    total = plan.forward_passes
    restored, finished = pixels[None], 0
    for step in plan.passes:
        def report(done: int, _count: int, finished: int = finished) -> None:
            if progress:
                progress(finished + done, total)

        guard = forward_for(step) if forward_for else forward
        one_view = tiled_restore(model, step.code, step.tile, step.overlap, plan.batch_size, step.guide, guard)
        with prompt_weights_applied(model, step.weights), torch.inference_mode(), autocast(device, dtype):
            restored = self_ensemble(one_view, restored, step.views, report).nan_to_num_(0.0).clamp_(0, 1).float()
        finished += step.forward_passes
    return restored[0]


@dataclass(frozen=True)
class Choice:
    """The prompts one photo is restored with, in order (() : clean, copied unchanged), and why."""

    names: tuple[str, ...]
    detection: Detection | None = None  # what the detector saw (auto mode)

    @property
    def label(self) -> str:
        return "+".join(self.names) or "clean"


Chooser = Callable[[torch.Tensor], Choice]  # (3, H, W) pixels -> the prompts for that photo


def chain_chooser(names: tuple[str, ...]) -> Chooser:
    """The same passes for every photo (``--degradation haze+noise``)."""
    return lambda _pixels: Choice(names)


def auto_chooser(detector: Detector, checkpoint: Checkpoint) -> Chooser:
    """Per photo, what the detector finds among the families this checkpoint can restore, as sure as the
    checkpoint's :class:`~dfpir_cli.detect.AutoPolicy` asks."""
    names = checkpoint.prompts.names
    families = known_families(names)
    policy = AutoPolicy.of(checkpoint.metadata)

    def choose(pixels: torch.Tensor) -> Choice:
        detection = detector.detect(pixels, families, policy)
        return Choice(plan_prompts(detection, names), detection)

    return choose


@dataclass
class FileResult:
    source: str
    output: str | None
    status: Status
    reason: str = ""
    megapixels: float = 0.0
    seconds: float = 0.0
    degradation: str = ""  # the prompts it was restored with ("haze", "noise25+haze"), or "clean" (auto)
    detection: dict | None = None  # the detector's probabilities and decision (auto mode)


@dataclass
class RestoreSummary:
    results: list[FileResult] = field(default_factory=list)
    device: str = "cpu"
    precision: str = "fp32"
    tile: int | None = None
    tone_tile: int | None = None  # the tile of haze and low-light passes (Planner.tone_tile)
    haze_guide: int = 0  # thumbnail side haze passes take their tone from (Planner.haze_guide; 0: off)
    views: int = 1  # self-ensemble views per restoration pass asked for
    capped: dict[str, int] = field(default_factory=dict)  # prompts that ran in fewer views (rain: 4)
    reruns: Reruns = field(default_factory=Reruns)  # tiles whose output was not finite (Restorer.guard)
    prompt: str = ""
    notes: list[str] = field(default_factory=list)  # what the user should know, the reruns' notes included
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(result.status == status for result in self.results)

    @property
    def megapixels(self) -> float:
        return sum(result.megapixels for result in self.results if result.status == "processed")

    @property
    def megapixels_per_second(self) -> float:
        busy = sum(result.seconds for result in self.results if result.status == "processed")
        return self.megapixels / busy if busy > 0 else 0.0

    @property
    def detected(self) -> dict[str, int]:
        """How many photos were restored with each prompt (or chain), and found clean."""
        counts: dict[str, int] = {}
        for result in self.results:
            if result.status in ("processed", "clean") and result.degradation:
                counts[result.degradation] = counts.get(result.degradation, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    @property
    def low_confidence(self) -> list[FileResult]:
        return [result for result in self.results if result.detection and result.detection["low_confidence"]]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 when some file failed."""
        return 1 if self.count("failed") else 0

    def to_json(self) -> dict:
        return {"processed": self.count("processed"), "clean": self.count("clean"), "skipped": self.count("skipped"),
                "failed": self.count("failed"), "detected": self.detected,
                "low_confidence": [result.source for result in self.low_confidence],
                "megapixels": round(self.megapixels, 3), "megapixels_per_second": round(self.megapixels_per_second, 4),
                "seconds": round(self.seconds, 3), "device": self.device, "precision": self.precision,
                "tile": self.tile, "tile_haze_lowlight": self.tone_tile, "haze_guide": self.haze_guide,
                "self_ensemble": self.views,
                "self_ensemble_capped": self.capped, "precision_reruns": self.reruns.steps,
                "nonfinite_tiles": self.reruns.nonfinite, "prompt": self.prompt, "notes": self.notes,
                "files": [vars(result) for result in self.results]}


class RestoreListener:
    """What a batch reports as it goes; the command renders it. The defaults do nothing."""

    def file_started(self, index: int, source: Path, tiles: int) -> None:
        """File number ``index`` (from 0) is about to run in ``tiles`` forward passes."""

    def tiles_done(self, done: int, total: int) -> None:
        """Progress within the current file."""

    def file_chosen(self, source: Path, choice: Choice) -> None:
        """The prompts a file will be restored with (reported when a Chooser picks them)."""

    def file_planned(self, source: Path, plan: RestorePlan) -> None:
        """What the file's restoration will do (its passes, tiles, guides, views), before it runs."""

    def file_finished(self, result: FileResult) -> None:
        """A file was processed, skipped or failed."""


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, DfpirError):
        return str(error)
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower()):
        return "out of memory: pass a smaller --tile (e.g. --tile 256) or --batch-size 1"
    if isinstance(error, OSError):
        return f"cannot write the output: {error.strerror or error}"
    return f"{type(error).__name__}: {error}"


def restore_files(files: list[InputFile], problems: list[InputProblem], restorer: Restorer, output_dir: Path,
                  suffix: str = "", ext: str | None = None, overwrite: bool = False,
                  listener: RestoreListener | None = None, chooser: Chooser | None = None) -> RestoreSummary:
    """Restore every file into ``output_dir``; one file's failure is recorded and the batch goes on.

    ``chooser`` picks each photo's prompts (default: the restorer's one code for all).
    """
    listener = listener or RestoreListener()
    planner = restorer.planner
    summary = RestoreSummary(device=str(restorer.device), precision=planner.precision, tile=planner.tile,
                             tone_tile=planner.tone_tile, haze_guide=planner.haze_guide, views=planner.views,
                             notes=[restorer.precision_note] if restorer.precision_note else [])
    for problem in problems:
        result = FileResult(problem.spec, None, "failed", problem.reason)
        summary.results.append(result)
        listener.file_finished(result)
    check_outputs_spare_inputs(files, output_dir, suffix, ext)
    written: dict[Path, Path] = {}
    started = time.perf_counter()
    restorer.guard.reruns = reruns = summary.reruns  # the guard counts this batch's reruns into the summary
    for index, item in enumerate(files):
        nonfinite = reruns.nonfinite
        result = _restore_one(index, item, restorer, output_dir, suffix, ext, overwrite, written, listener, chooser)
        if result.status == "processed" and reruns.nonfinite > nonfinite:
            result.reason = Reruns(nonfinite=reruns.nonfinite - nonfinite).notes()[0]
        summary.results.append(result)
        listener.file_finished(result)
    summary.seconds = time.perf_counter() - started
    summary.capped = dict(restorer.capped)
    summary.notes += reruns.notes()
    return summary


def _restore_one(index: int, item: InputFile, restorer: Restorer, output_dir: Path, suffix: str, ext: str | None,
                 overwrite: bool, written: dict[Path, Path], listener: RestoreListener,
                 chooser: Chooser | None) -> FileResult:
    target = plan_output(item, output_dir, suffix, ext)
    source = str(item.path)
    key = target.resolve()
    if key in written:
        return FileResult(source, str(target), "failed",
                          f"its output {target} was already written from {written[key]} in this run "
                          "(two inputs with the same name): restore them separately or use --recursive")
    if target.exists() and not overwrite:
        return FileResult(source, str(target), "skipped", "output exists (--overwrite to replace it)")
    started = time.perf_counter()
    choice = None
    try:
        image = read_image(item.path)
        if chooser is not None:
            choice = chooser(image.pixels)
            listener.file_chosen(item.path, choice)
        if choice is not None and not choice.names:
            _copy_unchanged(item.path, target, image)
        else:
            plan = restorer.plan(image.height, image.width, choice.names if choice else None,
                                 choice.detection if choice else None)
            listener.file_planned(item.path, plan)
            listener.file_started(index, item.path, plan.forward_passes)
            restored = restorer.run(plan, image.pixels, listener.tiles_done)
            write_image(target, restored, image)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
        return FileResult(source, None, "failed", _failure_reason(error))
    written[key] = item.path
    status: Status = "clean" if choice is not None and not choice.names else "processed"
    return FileResult(source, str(target), status, "", image.megapixels, time.perf_counter() - started,
                      choice.label if choice else "",
                      choice.detection.to_json() if choice is not None and choice.detection else None)


def _copy_unchanged(source: Path, target: Path, image) -> None:
    """A clean photo's output: the file's own bytes, or its pixels re-encoded when --ext changes the format."""
    if output_format(target, image.format) == image.format:
        write_atomic(target, source.read_bytes())
    else:
        write_image(target, image.pixels, image)
