"""`dfpir train`: the paper's all-in-one training (DESIGN.md section 4), resumable, on one or many GPUs."""

from __future__ import annotations

import itertools
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..base.distributed import Distributed, init_distributed, shutdown_distributed
from ..data.folder import require_training_folders
from ..data.train_sets import TrainingData, build_training_data
from ..errors import ClipUnavailableError, InputError
from ..model import DFPIR, PRESETS, DFPIRConfig
from ..train.loop import OwnWeights, RunOptions, StepInfo, TrainMonitor
from ..train.loop import train as run_training
from ..train.recipe import PAPER_EPOCHS, PAPER_PHASES, Phase, PhasePlan, Recipe
from ..weights.checkpoint import Checkpoint, PromptBank
from ..weights.prompts import DEGRADATIONS, TASK_SETS, ClipTextEncoder, random_codes, resolve_degradation
from ..weights.resolve import resolve_weights
from .common import DeviceOpt, QuietOpt, console, err_console, handle_errors, is_interactive


class PromptEncoder(str, Enum):
    clip = "clip"
    random = "random"


def _degradations(tasks: int | None, degradations: str | None) -> tuple[str, ...]:
    if degradations:
        names = [resolve_degradation(name) for name in degradations.split(",") if name.strip()]
        if len(set(names)) != len(names):
            raise InputError(f"--degradations names a degradation twice: {degradations}")
        return tuple(names)
    if tasks not in TASK_SETS:
        raise InputError(f"--tasks must be 3 (noise, rain, haze) or 5 (plus blur, low light), not {tasks}")
    return TASK_SETS[tasks]


def _network(preset: str, text_dim: int | None) -> tuple[DFPIRConfig, str]:
    if preset in PRESETS:
        config = PRESETS[preset]
    elif preset.endswith(".json") and Path(preset).is_file():
        try:
            data = json.loads(Path(preset).read_text())
            config = DFPIRConfig.from_dict(data.get("model", data) if isinstance(data, dict) else data)
        except (OSError, TypeError, ValueError) as error:
            raise InputError(f"--preset {preset}: not a network config ({error})") from error
    else:
        raise InputError(f"unknown --preset {preset!r}: use one of {', '.join(PRESETS)} or a config .json file")
    if text_dim is not None:
        config = DFPIRConfig.from_dict({**config.to_dict(), "text_dim": text_dim})
    return config, preset


def _real_pairs(values: list[str] | None) -> dict[str, Path]:
    pairs = {}
    for value in values or []:
        name, _, folder = value.partition("=")
        if not name or not folder:
            raise InputError(f"--pairs {value!r}: write NAME=DIR, such as noise15=PolyU/")
        pairs[resolve_degradation(name)] = Path(folder)
    return pairs


def _repeats(values: list[str] | None) -> dict[str, int]:
    repeats = {}
    for value in values or []:
        name, _, count = value.partition("=")
        if not count.strip().isdigit() or int(count) < 1:
            raise InputError(f"--repeat {value!r}: write NAME=COUNT, such as rain=120")
        repeats[resolve_degradation(name)] = int(count)
    return repeats


def _initial_checkpoint(spec: str, preset: str, text_dim: int | None) -> Checkpoint:
    """The checkpoint ``--init-weights`` names (``default``: the embedded model); it fixes the network."""
    if preset != "paper" or text_dim is not None:
        raise InputError("--init-weights takes the network from the checkpoint: drop --preset and --text-dim")
    return resolve_weights(None if spec.strip().lower() == "default" else spec)


def _initial_prompts(checkpoint: Checkpoint, names: tuple[str, ...], seed: int) -> Callable[[], PromptBank]:
    """The checkpoint's own codes for the degradations to train (the codes its weights were trained with).

    A degradation the checkpoint does not know gets a new code, when its codes are random ones
    (:func:`_new_code`: seeded by the name, and never one of the checkpoint's codes); so does one that runs with
    its own weights there (:attr:`Checkpoint.prompt_weights`), which training does not carry: its code was
    made for them, not for the shared network it is trained on here.
    """
    bank = checkpoint.prompts
    unknown = tuple(name for name in names if name not in bank.names or name in checkpoint.prompt_weights)
    if unknown and bank.encoder != "random":
        raise InputError(f"--init-weights: the checkpoint has no prompt code for {', '.join(unknown)} (it knows "
                         f"{', '.join(bank.names)}), and its codes come from the {bank.encoder} encoder, which "
                         "cannot make one here: fine-tune on those, or train from scratch")
    codes = {name: code for name, code in zip(bank.names, bank.codes, strict=True) if name not in unknown}
    for name in unknown:
        codes[name] = _new_code(name, seed, [*bank.codes, *codes.values()])
    texts = {**dict(zip(bank.names, bank.texts, strict=True)), **{name: DEGRADATIONS[name].text for name in unknown}}
    return lambda: PromptBank(names, tuple(texts[name] for name in names),
                              torch.stack([codes[name] for name in names]), bank.encoder)


def _own_weights(spec: str, initial: Checkpoint | None, names: tuple[str, ...], seed: int) -> OwnWeights:
    """``--own-weights MODULES``: the run that trains the one degradation's own copy of those modules."""
    if initial is None:
        raise InputError("--own-weights trains a prompt's own copy of part of a trained network: pass --init-weights")
    if len(names) != 1:
        raise InputError(f"--own-weights trains one prompt's own weights: pass one degradation, not {', '.join(names)}")
    known = [name for name, _ in initial.model.named_children()]
    modules: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if item == "decoder":
            modules += DFPIR.decoder_modules
        elif item in known:
            modules.append(item)
        else:
            raise InputError(f"--own-weights {spec!r}: {item!r} is not a module of this network. Name 'decoder' or "
                             f"modules among: {', '.join(known)}")
    prompt, bank = names[0], initial.prompts
    if prompt in bank.names:  # its code, own weights or not: the code they were made with
        code, text = bank.code(prompt), bank.texts[bank.index(prompt)]
    else:
        new = _initial_prompts(initial, names, seed)()  # a new code, or the error a CLIP-coded checkpoint gives
        code, text = new.codes[0], new.texts[0]
    return OwnWeights(initial, prompt, text, code, tuple(dict.fromkeys(modules)))


def _new_code(name: str, seed: int, taken: list[torch.Tensor]) -> torch.Tensor:
    """A random code for ``name``, drawn from a generator seeded by the name and ``seed``, redrawn while it is
    near one of the ``taken`` codes (a checkpoint's codes may be any rows of any seed's draws, so a row count
    alone could repeat one)."""
    for attempt in itertools.count():
        generator = torch.Generator().manual_seed(zlib.crc32(f"{name}:{seed}:{attempt}".encode()))
        code = torch.randn(taken[0].shape[0], generator=generator)
        if all(float((code - other).norm()) > 1e-3 * float(other.norm()) for other in taken):
            return code
    raise AssertionError("unreachable")  # pragma: no cover


def _prompt_factory(names: tuple[str, ...], encoder: PromptEncoder, clip_weights: Path | None, seed: int,
                    text_dim: int):
    texts = tuple(DEGRADATIONS[name].text for name in names)

    def make() -> PromptBank:
        if encoder is PromptEncoder.random:
            return PromptBank(names, texts, random_codes(names, seed, text_dim), "random")
        if text_dim != 512:
            raise InputError(f"CLIP codes are 512-d, but the network takes {text_dim}-d codes: "
                             "use --prompt-encoder random, or drop --text-dim")
        try:
            codes = ClipTextEncoder.load(clip_weights).encode(texts)
        except ClipUnavailableError as error:
            raise ClipUnavailableError(
                f"{error}\nOr train without CLIP: --prompt-encoder random gives each degradation a seeded random "
                "code, which works as well for DFPIR (its DGM never trains, so any distinct codes give distinct "
                "channel orders); the checkpoint then accepts degradation names only, not free-text prompts.") from None
        return PromptBank(names, texts, codes, "clip")

    return make


def _data_table(data: TrainingData) -> Table:
    table = Table(title="training data")
    for column in ("degradation", "train pairs", "val pairs", "source"):
        table.add_column(column)
    for name, (train_count, val_count) in data.counts().items():
        sources = "\n".join(f"{source.root} ({source.kind})" for source in data.sources if name in source.names)
        table.add_row(name, f"{train_count:,}", str(val_count), sources)
    return table


def _report_data(data: TrainingData, patch_size: int) -> None:
    report = data.report

    def listing(paths: list[Any]) -> str:
        shown = ", ".join(str(p) for p in paths[:5])
        return shown + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")

    if report.unreadable:
        err_console.print(f"[yellow]warning:[/] {len(report.unreadable)} unreadable image(s) skipped: "
                          f"{listing(report.unreadable)}", highlight=False, soft_wrap=True)
    if report.mismatched:
        err_console.print(f"[yellow]warning:[/] {len(report.mismatched)} pair(s) whose degraded and clean images "
                          f"differ in size skipped: {listing([d for d, _ in report.mismatched])}",
                          highlight=False, soft_wrap=True)
    if report.small:
        err_console.print(f"[yellow]note:[/] {len(report.small)} image(s) are smaller than the {patch_size} px "
                          f"patches and are reflect-padded: {listing(report.small)}", highlight=False, soft_wrap=True)


@contextmanager
def _scan_status(show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A spinner while image headers are checked (a large OTS copy takes a minute or two)."""
    if not show:
        yield None
        return
    with console.status("checking training images") as status:
        yield lambda done, total: status.update(f"checking training images: {done:,}/{total:,}")


def _psnr_text(psnr: dict[str, float | None]) -> str:
    known = [v for v in psnr.values() if v is not None]
    if not known:
        return ""
    return f"val {sum(known) / len(known):.2f} dB"


class _Display(TrainMonitor):
    """Live progress (step, loss, lr, it/s, ETA, last validation); plain lines when not on a terminal."""

    def __init__(self, live: bool, quiet: bool, log_every: int) -> None:
        self.live, self.quiet, self.log_every = live and not quiet, quiet, log_every
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.last_val = ""
        self.loss: float | None = None
        self.started_at = time.perf_counter()

    def started(self, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        plans: list[PhasePlan] = info["plans"]
        table = Table(title="plan")
        for column in ("phase", "steps", "lr", "patch", "batch / process", "global batch"):
            table.add_column(column)
        for plan in plans:
            table.add_row(str(plan.index + 1), f"{plan.steps:,}", f"{plan.lr:g}", str(plan.patch_size),
                          str(plan.batch_size), str(plan.global_batch))
        console.print(table)
        where = f"{info['world_size']} processes" if info["world_size"] > 1 else "1 process"
        resumed = f", resuming at step {info['start_step']:,}" if info["resumed"] else ""
        console.print(f"device {info['device']} ({where}), prompt codes: {info['prompt_encoder']}, "
                      f"{info['val_items']} validation image(s){resumed}", highlight=False)
        if info.get("own_weights"):
            console.print(f"[dim]--own-weights: only the prompt's own {', '.join(info['own_weights'])} train; the "
                          f"rest of the network is frozen ({len(info['frozen'])} parameter tensors)[/]")
        elif info["frozen"]:
            console.print(f"[dim]{len(info['frozen'])} parameter tensors frozen: the DGM's linear layers get no "
                          "gradient (topk indices carry none), so each prompt keeps its initial channel order[/]")
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]phase {task.fields[phase]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
                TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("{task.fields[val]}"), console=console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=info["total_steps"], completed=info["start_step"],
                                               phase=1, loss="-", lr="-", speed="", val="")

    def phase(self, plan: PhasePlan) -> None:
        if not self.quiet and not self.live:
            console.print(f"phase {plan.index + 1}: {plan.steps:,} steps, lr {plan.lr:g}, {plan.patch_size} px, "
                          f"global batch {plan.global_batch}", highlight=False)

    def step(self, info: StepInfo) -> None:
        self.loss = info.loss if self.loss is None else 0.9 * self.loss + 0.1 * info.loss
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=info.step, phase=info.phase + 1, loss=f"{self.loss:.4f}",
                                 lr=f"{info.lr:.2e}", speed=f"{info.samples_per_s:.1f} samples/s",
                                 val=self.last_val)
        elif not self.quiet and (info.step % self.log_every == 0 or info.step == info.total_steps):
            console.print(f"step {info.step:,}/{info.total_steps:,}  loss {self.loss:.4f}  lr {info.lr:.2e}  "
                          f"{info.samples_per_s:.1f} samples/s  {self.last_val}", highlight=False)

    def validated(self, step: int, psnr: dict[str, float | None]) -> None:
        self.last_val = _psnr_text(psnr)
        if not self.quiet and not self.live:
            details = ", ".join(f"{name} {value:.2f}" for name, value in psnr.items() if value is not None)
            console.print(f"step {step:,}: validation PSNR {details} ({self.last_val})", highlight=False)

    def saved(self, path: Path, kind: str) -> None:
        if kind == "interrupt":
            err_console.print(f"interrupted: state saved, continue with --resume ({path})", highlight=False)

    def warn(self, message: str) -> None:
        target = self.progress.console if self.progress is not None else err_console
        target.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def train(
    tasks: Annotated[int, typer.Option("--tasks", help="3: noise (sigma 15/25/50), rain, haze; 5: also motion blur "
                                                       "and low light.")] = 3,
    degradations: Annotated[str | None, typer.Option(
        "--degradations", help="Comma-separated degradation names or aliases instead of --tasks, such as "
                               "noise15,noise25,noise50,rain,haze.")] = None,
    preset: Annotated[str, typer.Option("--preset", help=f"Network size: {', '.join(PRESETS)}, or a config .json "
                                                          "file (a checkpoint's config.json works).")] = "paper",
    init_weights: Annotated[str | None, typer.Option(
        "--init-weights", help="Fine-tune: start from this checkpoint's weights and prompt codes instead of a random "
                               "init (a checkpoint folder, a Hub repo id, or 'default' for the embedded model). The "
                               "network and the codes come from it, so --preset, --text-dim and --prompt-encoder "
                               "do not apply.")] = None,
    own_weights: Annotated[str | None, typer.Option(
        "--own-weights", help="With --init-weights and one degradation: train only that prompt's own copy of these "
                              "modules ('decoder', or comma-separated module names such as refinement,output), the "
                              "rest of the network frozen. The checkpoints written are the --init-weights one, every "
                              "prompt kept, with these as the prompt's own weights: the other prompts restore "
                              "exactly as before (docs/training.md).")] = None,
    data_root: Annotated[Path | None, typer.Option(
        "--data-root", help="One sub-folder per task: denoise/ (clean images; noise is added on the fly), derain/ "
                            "(Rain100L: rainy/rain-N.png + gt/norain-N.png), dehaze/ (RESIDE OTS: synthetic/ID_a_b.jpg "
                            "+ original/ID.jpg), deblur/ (GoPro: blur/ + sharp/), lowlight/ (LOL: low/ + high/). "
                            "input/ + target/ also pair. With no data option at all, the train/ folder of the "
                            "datasets folder ($DFPIR_DATA, else ~/.cache/dfpir/data) is used, and missing sets are "
                            "named with where to download them.")] = None,
    noise_dir: Annotated[Path | None, typer.Option("--noise-dir", help="Clean images for denoising.")] = None,
    rain_dir: Annotated[Path | None, typer.Option("--rain-dir", help="Rain100L-style folder.")] = None,
    haze_dir: Annotated[Path | None, typer.Option("--haze-dir", help="RESIDE OTS-style folder.")] = None,
    blur_dir: Annotated[Path | None, typer.Option("--blur-dir", help="GoPro-style folder.")] = None,
    lowlight_dir: Annotated[Path | None, typer.Option("--lowlight-dir", help="LOL-style folder.")] = None,
    clean_dir: Annotated[Path | None, typer.Option(
        "--clean-dir", help="Any folder of clean photos: every degradation without a folder of its own is "
                            "synthesised from them on the fly (the seeded synthesis of `dfpir eval`).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: checkpoints/, best/, final/, "
                                                                "resume.pt, val.csv, train_log.csv.")] = Path("runs/train"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output exactly where its last "
                                                          "save left it (same options as before).")] = False,
    steps: Annotated[int | None, typer.Option("--steps", help="Steps of the main phase (wins over --epochs).")] = None,
    epochs: Annotated[float, typer.Option("--epochs", help="Epochs of the main phase.")] = PAPER_EPOCHS[0],
    patch_size: Annotated[int, typer.Option("--patch-size", help="Patch size of the main phase, a multiple of 8.")]
    = PAPER_PHASES[0].patch_size,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Patches per process and step in the main phase "
                                                                 "(global batch = this x processes).")]
    = PAPER_PHASES[0].batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate of the main phase (cosine schedule).")]
    = PAPER_PHASES[0].lr,
    finetune_steps: Annotated[int | None, typer.Option("--finetune-steps", help="Steps of the fine-tune phase "
                                                                                "(wins over --finetune-epochs).")] = None,
    finetune_epochs: Annotated[float, typer.Option("--finetune-epochs", help="Epochs of the fine-tune phase; "
                                                                             "0 skips it.")] = PAPER_EPOCHS[1],
    finetune_patch_size: Annotated[int, typer.Option("--finetune-patch-size")] = PAPER_PHASES[1].patch_size,
    finetune_batch_size: Annotated[int, typer.Option("--finetune-batch-size")] = PAPER_PHASES[1].batch_size,
    finetune_lr: Annotated[float, typer.Option("--finetune-lr")] = PAPER_PHASES[1].lr,
    min_lr: Annotated[float, typer.Option("--min-lr", help="Where each phase's cosine schedule ends.")] = 1e-6,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Linear warm-up steps at the start.")] = 0,
    beta1: Annotated[float, typer.Option("--beta1", help="Adam beta1.")] = 0.9,
    beta2: Annotated[float, typer.Option("--beta2", help="Adam beta2.")] = 0.999,
    flips: Annotated[bool, typer.Option("--flips/--no-flips", help="Random horizontal and vertical flips.")] = True,
    grad_clip: Annotated[float | None, typer.Option("--grad-clip", help="Clip the global gradient norm to this.")]
    = None,
    loss: Annotated[str, typer.Option("--loss", help="Training loss: l1 (the paper's) or mse (what PSNR scores; "
                                                     "more cautious where the target is uncertain, as in blind "
                                                     "deblurring).")] = "l1",
    synthesis: Annotated[str, typer.Option(
        "--synthesis", help="Models of the degradations synthesised from clean photos: realistic (matched to the real "
                            "test sets: thin rain streaks, tinted haze over tilted depth, a camera's dark capture), "
                            "classic (the models of the built-in benchmark, eval --dataset synthetic) or mixed "
                            "(either, a coin per patch).")] = "realistic",
    identity: Annotated[float, typer.Option(
        "--identity", help="Share of training patches (0-1) given the clean photo as input and target under the "
                           "task's prompt, so that a photo without the degradation comes back unchanged. 0 is the "
                           "paper's recipe.")] = 0.0,
    pairs: Annotated[list[str] | None, typer.Option(
        "--pairs", help="NAME=DIR: real degraded/clean pairs that join a degradation's data, such as real camera "
                        "noise for noise15 (--pairs noise15=PolyU/). DIR holds input/ with target/ (same file "
                        "names), the family's own layout, or PolyU's real/X_real with mean/X_mean. Repeatable.")] = None,
    pairs_repeat: Annotated[int, typer.Option(
        "--pairs-repeat", min=1, help="Use each --pairs folder's pairs this many times per epoch (a few dozen real "
                                      "pairs beside hundreds of synthesised photos).")] = 1,
    repeat: Annotated[list[str] | None, typer.Option(
        "--repeat", help="NAME=COUNT: use a degradation's pairs COUNT times per epoch (the reference code "
                         "repeats Rain100L 120 times: --repeat rain=120). Repeatable.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the network init, data order, crops, synthesis "
                                                     "and random prompt codes.")] = 0,
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(
        "--precision", help="Autocast of the forward pass and loss: auto (bf16 where the hardware has native bf16: "
                            "CPUs with AVX512-BF16 or AMX, CUDA GPUs that support it; fp32 elsewhere), bf16, fp32, "
                            "or fp16 (CUDA only, with loss scaling). Recorded in the run; --resume with auto keeps "
                            "the run's precision (fp32 for runs saved before it was recorded).")] = "auto",
    prompt_encoder: Annotated[PromptEncoder, typer.Option(
        "--prompt-encoder", help="clip: CLIP ViT-B/32 codes of the prompt texts (needs the CLIP weights); random: "
                                 "seeded random codes, one per degradation (names only at restore time).")]
    = PromptEncoder.clip,
    clip_weights: Annotated[Path | None, typer.Option("--clip-weights", help="open_clip ViT-B-32 weights file "
                                                                             "(default: the local cache).")] = None,
    text_dim: Annotated[int | None, typer.Option("--text-dim", help="Width of the prompt codes (512 for CLIP; "
                                                                    "smaller with random codes).")] = None,
    val_every: Annotated[int, typer.Option("--val-every", help="Validate every N steps (0: at the end only).")]
    = 2000,
    val_per_task: Annotated[int, typer.Option("--val-per-task", help="Clean images held out for validation "
                                                                     "per data folder.")] = 8,
    val_size: Annotated[int, typer.Option("--val-size", help="Validate on centre crops of at most this size.")]
    = 256,
    save_every: Annotated[int, typer.Option("--save-every", help="Write a resumable checkpoint every N steps.")]
    = 1000,
    keep_last: Annotated[int, typer.Option("--keep-last", help="Step checkpoints to keep (best/ is kept apart).")]
    = 3,
    workers: Annotated[int, typer.Option("--workers", help="Data loading processes per training process.")]
    = min(4, os.cpu_count() or 1),
    log_every: Annotated[int, typer.Option("--log-every", help="Steps between train_log.csv rows and plain "
                                                               "progress lines.")] = 50,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic kernels (slower on GPU).")]
    = False,
    max_bad_steps: Annotated[int, typer.Option("--max-bad-steps", help="Stop after this many NaN/inf steps in a "
                                                                       "row (each one is skipped).")] = 5,
    quiet: QuietOpt = False,
) -> None:
    """Train DFPIR: the paper's recipe by default (L1, Adam, 128 px, batch 5, flips, cosine, then a fine-tune
    phase at lr 1e-5, 192 px, batch 3), resumable, with mixed precision and data parallelism.

    Data parallel: start it with torchrun, for example `torchrun --standalone --nproc_per_node 4 --no-python dfpir
    train ...` (one process per GPU; --batch-size is per process). Only process 0 prints and writes.
    """
    distributed = Distributed()
    display = None
    with handle_errors():
        try:
            distributed, torch_device = init_distributed(device)
            quiet = quiet or not distributed.is_main
            names = _degradations(tasks, degradations)
            initial = _initial_checkpoint(init_weights, preset, text_dim) if init_weights else None
            own = _own_weights(own_weights, initial, names, seed) if own_weights is not None else None
            if initial is not None:
                config, preset_name = initial.config, str(initial.metadata.get("preset", "custom"))
                encoder = initial.prompts.encoder
                prompts = own.bank if own is not None else _initial_prompts(initial, names, seed)
                if own is None and initial.prompt_weights and not quiet:
                    carried = ", ".join(initial.prompt_weights)
                    console.print(f"Note: in {init_weights}, {carried} run(s) with their own weights, which training "
                                  "does not carry: the new checkpoint runs every prompt with the shared network it "
                                  f"trains ({carried} with a new code, where trained; --own-weights trains a prompt's "
                                  "own weights instead).", highlight=False, soft_wrap=True)
            else:
                config, preset_name = _network(preset, text_dim)
                encoder = prompt_encoder.value
                prompts = _prompt_factory(names, prompt_encoder, clip_weights, seed, config.text_dim)
            phases = (Phase(lr, patch_size, batch_size, steps=steps, epochs=None if steps is not None else epochs),
                      Phase(finetune_lr, finetune_patch_size, finetune_batch_size, steps=finetune_steps,
                            epochs=None if finetune_steps is not None else finetune_epochs))
            recipe = Recipe(names, config, phases, preset=preset_name, betas=(beta1, beta2), min_lr=min_lr,
                            warmup_steps=warmup_steps, grad_clip=grad_clip, flips=flips, seed=seed,
                            prompt_encoder=encoder, init_weights=init_weights, loss=loss, synthesis=synthesis,
                            identity=identity, own_weights=own.modules if own is not None else ())
            folders = {"noise": noise_dir, "rain": rain_dir, "haze": haze_dir, "blur": blur_dir,
                       "lowlight": lowlight_dir}
            real_pairs = _real_pairs(pairs)
            if data_root is None and clean_dir is None and not any(folders.values()) and not real_pairs:
                found = require_training_folders(names)  # the datasets folder's train/, or what is missing there
                data_root = found.root
                if not quiet:
                    console.print(f"No data option given: the paper's training sets from {data_root}: "
                                  + ", ".join(f"{family} ({path.name}/)" for family, path in found.found.items()),
                                  highlight=False, soft_wrap=True)
            largest_patch = max(phase.patch_size for phase in phases
                                if phase.steps or (phase.steps is None and phase.epochs))
            with _scan_status(not quiet and is_interactive()) as progress:
                data = build_training_data(names, data_root=data_root, folders=folders, clean_dir=clean_dir,
                                           patch_size=largest_patch, val_per_task=val_per_task, seed=seed,
                                           repeat=_repeats(repeat), pairs=real_pairs, pairs_repeat=pairs_repeat,
                                           progress=progress)
            if not quiet:
                console.print(_data_table(data))
                _report_data(data, largest_patch)
            options = RunOptions(output=output, resume=resume, precision=precision, val_every=val_every,
                                 val_size=val_size, val_per_task=val_per_task, save_every=save_every,
                                 keep_last=keep_last, workers=workers, log_every=log_every,
                                 deterministic=deterministic, max_bad_steps=max_bad_steps)
            display = _Display(is_interactive() and console.is_terminal, quiet, log_every)
            result = run_training(recipe, data, options, prompts, device=torch_device, distributed=distributed,
                                  monitor=display,
                                  initial_weights=initial.model.state_dict() if initial is not None else None, own=own)
            display.stop()
            if distributed.is_main:
                _summary(result)
        finally:
            if display is not None:
                display.stop()
            shutdown_distributed()


def _summary(result) -> None:
    table = Table(title=f"validation PSNR (dB) after {result.steps:,} steps")
    table.add_column("degradation")
    table.add_column("PSNR", justify="right")
    for name, value in result.last_val.items():
        table.add_row(name, "-" if value is None else f"{value:.2f}")
    if result.last_val:
        console.print(table)
    if result.skipped_steps:
        err_console.print(f"[yellow]{result.skipped_steps} step(s) were skipped (NaN/inf loss or gradients)[/]")
    if result.unreadable_reads:
        err_console.print(f"[yellow]{result.unreadable_reads} read(s) hit an unreadable image; the next pair was "
                          "used instead[/]")
    best = f"\nbest:  {result.best} (mean val PSNR {result.best_psnr:.2f} dB)" if result.best else ""
    console.print(f"final: {result.final}{best}\nUse it: dfpir restore PHOTO --weights {result.final} "
                  f"--degradation NAME", highlight=False, soft_wrap=True)
