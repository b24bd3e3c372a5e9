"""Training DFPIR: the paper's recipe, resumable, mixed precision, data-parallel under ``torchrun``.

DESIGN.md section 4: L1 loss, Adam (0.9, 0.999), lr 1e-4, 128 px patches, batch 5, random flips, a cosine
schedule, 80 epochs; then 5 epochs at lr 1e-5, 192 px, batch 3. Every value is a field of :class:`Recipe`.

The DGM's linear layers receive no gradient (``topk`` indices carry none, DESIGN.md section 2), so they
are frozen: the optimizer never touches them, DDP needs no unused-parameter search, and each prompt's
channel order stays the one its initial weights give, as in the reference training.

Output folder of a run::

    checkpoints/step-0001000/   checkpoint folders (config.json + model.safetensors), the last K kept
    best/                       the checkpoint with the best mean validation PSNR so far
    final/                      the checkpoint at the end of the run
    resume.pt                   optimizer, scheduler, step, RNG states; its weights are in checkpoints/
    val.csv, train_log.csv      validation PSNR per task, and loss / lr / speed over time
    tensorboard/                the same, when TensorBoard is installed

``resume.pt`` is written after the checkpoint folder it names, both atomically, so a run killed at any
moment resumes from its last save and loses at most ``save_every`` steps. It holds plain types and
tensors only and is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..base.device import pick_device
from ..base.imageio import share_like_new
from ..base.precision import autocast, check_precision, precision_name, resolve_precision
from ..data.synthesis import SYNTHESIS_MODELS
from ..data.train_sets import GlobalBatchSampler, PatchDataset, TrainingData, steps_for_epochs, validation_images
from ..errors import InputError, TrainingError
from ..model import DFPIR, DFPIRConfig
from ..weights.checkpoint import PromptBank, load_checkpoint, load_weights_strict, save_checkpoint

STATE_NAME = "resume.pt"
STATE_FORMAT = "dfpir-train-state"
STATE_VERSION = 1


@dataclass(frozen=True)
class Phase:
    """One stage of the schedule: its own learning rate, patch size and batch size."""

    lr: float  # peak learning rate; cosine-annealed to the recipe's min_lr over the phase
    patch_size: int  # square training patches, a multiple of 8
    batch_size: int  # patches per process and step (the global batch is this times the number of processes)
    steps: int | None = None  # optimizer steps; wins over epochs
    epochs: float | None = None  # passes over the training pairs, turned into steps


PAPER_EPOCHS = (80, 5)  # main phase, fine-tune phase
PAPER_PHASES = (Phase(1e-4, 128, 5, epochs=PAPER_EPOCHS[0]), Phase(1e-5, 192, 3, epochs=PAPER_EPOCHS[1]))


# Training losses by name. L1 is the paper's; the mean squared error is what PSNR scores, and it prefers
# the conditional mean where the target is uncertain (as in blind deblurring) to a sharper guess.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"l1": F.l1_loss, "mse": F.mse_loss}


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights; a resumed run must have the same one."""

    degradations: tuple[str, ...]  # canonical names, in prompt-bank order
    config: DFPIRConfig  # the network
    phases: tuple[Phase, ...] = PAPER_PHASES
    preset: str = "custom"  # the network preset's name, for the record
    betas: tuple[float, float] = (0.9, 0.999)  # Adam
    min_lr: float = 1e-6  # where each phase's cosine ends
    warmup_steps: int = 0  # linear warm-up at the start of the first phase
    grad_clip: float | None = None  # max global gradient norm, None: no clipping
    flips: bool = True  # random horizontal and vertical flips
    seed: int = 0  # network init, data order, crops, synthetic degradations
    prompt_encoder: str = "clip"  # what made the prompt codes: clip or random
    init_weights: str | None = None  # the checkpoint a fine-tune starts from (None: random init), for the record
    loss: str = "l1"  # a key of LOSSES: l1 (the paper's) or mse
    precision: str = "fp32"  # autocast of forward + loss: fp32, bf16 or fp16 (what --precision auto resolved to)
    synthesis: str = "classic"  # models of synthetic degradations (SYNTHESIS_MODELS); runs before it: classic
    identity: float = 0.0  # share of patches given clean as input and target: teaches "no degradation, no change"

    def __post_init__(self) -> None:
        if not self.degradations:
            raise InputError("no degradations to train: pass --tasks 3|5 or --degradations")
        for phase in self.phases:
            if phase.patch_size % DFPIR.multiple_of or phase.patch_size <= 0:
                raise InputError(f"patch size {phase.patch_size} is not a positive multiple of {DFPIR.multiple_of} "
                                 "(the network downsamples three times)")
            if phase.batch_size < 1:
                raise InputError(f"batch size must be at least 1, not {phase.batch_size}")
            if phase.lr <= 0:
                raise InputError(f"learning rate must be positive, not {phase.lr}")
            if (phase.steps or 0) < 0 or (phase.epochs or 0) < 0:
                raise InputError("steps and epochs cannot be negative")
        if self.loss not in LOSSES:
            raise InputError(f"unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        if self.synthesis not in SYNTHESIS_MODELS:
            raise InputError(f"unknown synthesis {self.synthesis!r}: choose one of {', '.join(SYNTHESIS_MODELS)}")
        if not 0.0 <= self.identity < 1.0:
            raise InputError(f"--identity is a share of the patches, from 0 up to (not including) 1, not {self.identity}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        data["degradations"] = list(self.degradations)
        data["betas"] = list(self.betas)
        data["phases"] = [asdict(phase) for phase in self.phases]
        return data


@dataclass(frozen=True)
class PhasePlan:
    """A phase resolved against the data and the number of processes."""

    index: int
    lr: float
    patch_size: int
    batch_size: int  # per process
    global_batch: int
    first_step: int
    steps: int

    @property
    def end(self) -> int:
        return self.first_step + self.steps


def plan_phases(recipe: Recipe, train_pairs: int, world_size: int) -> list[PhasePlan]:
    """Turn epochs into steps (epochs count pairs of the global stream) and lay the phases end to end."""
    plans, first = [], 0
    for index, phase in enumerate(recipe.phases):
        global_batch = phase.batch_size * world_size
        if phase.steps is not None:
            steps = phase.steps
        elif phase.epochs:
            steps = steps_for_epochs(phase.epochs, train_pairs, global_batch)
        else:
            steps = 0
        plans.append(PhasePlan(index, phase.lr, phase.patch_size, phase.batch_size, global_batch, first, steps))
        first += steps
    if first == 0:
        raise InputError("the run has no steps: give --steps or --epochs a positive value")
    return plans


def learning_rate(step: int, plans: Sequence[PhasePlan], min_lr: float, warmup_steps: int = 0) -> float:
    """Cosine annealing within each phase, from its lr to ``min_lr``; linear warm-up at the very start."""
    for plan in plans:
        if plan.first_step <= step < plan.end:
            floor = min(min_lr, plan.lr)
            progress = (step - plan.first_step) / plan.steps
            lr = floor + (plan.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
            if plan.index == 0 and step < warmup_steps:
                lr *= (step + 1) / (warmup_steps + 1)
            return lr
    return min_lr


# ---------------------------------------------------------------------------------------------- processes

@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (one process and rank 0 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device_spec: str = "auto") -> tuple[Distributed, torch.device]:
    """Join the ``torchrun`` job described by RANK / WORLD_SIZE / LOCAL_RANK, or run alone.

    GPUs use NCCL, one GPU per process (``cuda:LOCAL_RANK``); CPUs use gloo. Rendezvous (also across
    nodes) is torchrun's business: it sets MASTER_ADDR / MASTER_PORT for the default ``env://`` init.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), pick_device(device_spec)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    spec = device_spec.strip().lower()
    use_cuda = torch.cuda.is_available() and (spec == "auto" or spec.startswith("cuda"))
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device_spec}: CUDA is not available on this machine")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                             "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Distributed(rank, world_size, local_rank), device


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- the step

def training_precision(precision: str, device: torch.device) -> tuple[torch.dtype, str]:
    """The autocast dtype to train at and a note when the request cannot be honoured (see precision.py).

    fp16 trains on CUDA only, where a GradScaler keeps small gradients from flushing to zero.
    """
    dtype, note = resolve_precision(precision, device)
    if dtype is torch.float16 and device.type != "cuda":
        return torch.float32, f"fp16 training needs CUDA (loss scaling); training in fp32 on {device.type}"
    return dtype, note


def trainable_parameters(model: DFPIR) -> list[str]:
    """Names of the parameters that get a gradient: one probe forward/backward on an 8x8 input.

    In DFPIR the DGM's linears get none (DESIGN.md section 2); they are frozen rather than carried.
    """
    probe = torch.zeros(1, model.config.in_channels, model.multiple_of, model.multiple_of)
    code = torch.linspace(-1.0, 1.0, model.config.text_dim)[None]
    model(probe, code).square().sum().backward()
    names = [name for name, parameter in model.named_parameters() if parameter.grad is not None]
    model.zero_grad(set_to_none=True)
    return names


@dataclass
class StepResult:
    loss: float  # mean loss over the global batch
    grad_norm: float  # before clipping
    skipped: bool  # loss or gradients were not finite: no update


class Trainer:
    """The network, its optimizer and one optimisation step; knows nothing about files or schedules."""

    def __init__(self, config: DFPIRConfig, codes: torch.Tensor, *, seed: int = 0, betas=(0.9, 0.999),
                 grad_clip: float | None = None, device: torch.device | str = "cpu", precision: str = "fp32",
                 distributed: Distributed | None = None, max_bad_steps: int = 5, loss: str = "l1") -> None:
        self.device = torch.device(device)
        self.distributed = distributed or Distributed()
        self.autocast_dtype, self.precision_note = training_precision(precision, self.device)
        use_scaler = self.autocast_dtype is torch.float16
        torch.manual_seed(seed)  # every process builds the same network
        self.model = DFPIR(config)
        trainable = set(trainable_parameters(self.model))
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(name in trainable)
        self.frozen = sorted(name for name, _ in self.model.named_parameters() if name not in trainable)
        self.model.to(self.device).train()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.parameters, lr=1e-4, betas=tuple(betas))
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.grad_clip = grad_clip
        self.loss_function = LOSSES[loss]
        self.codes = codes.to(self.device, torch.float32)
        self.max_bad_steps = max_bad_steps
        self.bad_steps = 0
        self.network: torch.nn.Module = self.model
        if self.distributed.active:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids)

    def _autocast(self):
        return autocast(self.device, self.autocast_dtype)

    def _mean_over_processes(self, value: torch.Tensor) -> torch.Tensor:
        if self.distributed.active:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.distributed.world_size
        return value

    def step(self, degraded: torch.Tensor, clean: torch.Tensor, tasks: torch.Tensor, lr: float) -> StepResult:
        """One Adam step on the loss; a non-finite loss or gradient skips the update (NaN/inf guard)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        non_blocking = self.device.type == "cuda"
        degraded = degraded.to(self.device, non_blocking=non_blocking)
        clean = clean.to(self.device, non_blocking=non_blocking)
        codes = self.codes[tasks.to(self.device)]
        with self._autocast():
            restored = self.network(degraded, codes)
            loss = self.loss_function(restored.float(), clean)  # in fp32 whatever the autocast dtype
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.parameters if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        if self.grad_clip is not None and grads:
            torch.nn.utils.clip_grads_with_norm_(self.parameters, self.grad_clip, grad_norm)
        mean_loss = float(self._mean_over_processes(loss.detach()))
        grad_norm_value = float(grad_norm)
        loss_ok = math.isfinite(mean_loss)
        if self.scaler.is_enabled():
            # fp16: overflowing gradients are the scaler's business (it skips and lowers the scale).
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = not loss_ok or not math.isfinite(grad_norm_value)
            bad = not loss_ok
        else:
            bad = skipped = not (loss_ok and math.isfinite(grad_norm_value))
            if not skipped:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps = self.bad_steps + 1 if bad else 0
        if self.bad_steps >= self.max_bad_steps:
            raise TrainingError(
                f"the loss or the gradients were NaN/inf for {self.bad_steps} steps in a row: training diverged. "
                "Resume from the last checkpoint with a lower --lr, --grad-clip 1.0, or --precision fp32/bf16.")
        return StepResult(mean_loss, grad_norm_value, skipped)

    @torch.no_grad()
    def validate(self, items: Sequence[tuple[int, torch.Tensor, torch.Tensor]], num_tasks: int) -> list[float | None]:
        """Mean PSNR (dB, RGB in [0, 1]) per task over the held-out items, each process its share."""
        self.model.eval()
        totals = torch.zeros(num_tasks, 2, dtype=torch.float64, device=self.device)
        rank, world = self.distributed.rank, self.distributed.world_size
        for task, degraded, clean in items[rank::world]:
            code = self.codes[task][None]
            with self._autocast():
                restored = self.model(degraded[None].to(self.device), code)
            mse = (restored.float().clamp(0, 1) - clean[None].to(self.device)).square().mean().double()
            totals[task, 0] += 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
            totals[task, 1] += 1
        if self.distributed.active:
            dist.all_reduce(totals)
        self.model.train()
        return [float(total / count) if count else None for total, count in totals.tolist()]


# ---------------------------------------------------------------------------------------------- the run

@dataclass
class RunOptions:
    """How a run is carried out; apart from ``precision`` none of it changes the weights (so it may change on
    --resume)."""

    output: Path
    resume: bool = False
    precision: str = "fp32"  # auto, fp32, bf16 or fp16: resolved into Recipe.precision (auto resumes as saved)
    val_every: int = 2000  # steps; 0: only at the end
    val_size: int = 256  # validation centre crops of at most this size
    val_per_task: int = 8  # held-out clean images per source
    save_every: int = 1000  # steps between resumable checkpoints
    keep_last: int = 3  # step checkpoints kept (the best one is kept apart)
    workers: int = 2  # DataLoader processes per training process
    log_every: int = 50  # steps between train_log.csv rows
    deterministic: bool = False  # torch.use_deterministic_algorithms
    max_bad_steps: int = 5  # NaN/inf steps in a row before the run stops


@dataclass
class StepInfo:
    step: int  # steps done
    total_steps: int
    phase: int
    loss: float
    lr: float
    samples_per_s: float
    skipped: bool


@dataclass
class TrainResult:
    output: Path
    final: Path
    best: Path | None
    best_psnr: float | None
    last_val: dict[str, float | None]
    steps: int
    skipped_steps: int
    unreadable_reads: int
    resumed_from: int | None = None


class TrainMonitor:
    """What the run reports as it goes (only process 0 calls it); the command renders it."""

    def started(self, info: dict[str, Any]) -> None:
        """Once, before the first step: the plan, the data, where the run starts."""

    def phase(self, plan: PhasePlan) -> None:
        """A phase begins (or resumes)."""

    def step(self, info: StepInfo) -> None:
        """After every step."""

    def validated(self, step: int, psnr: dict[str, float | None]) -> None:
        """After each validation: mean PSNR per degradation (None: no held-out pair)."""

    def saved(self, path: Path, kind: str) -> None:
        """A checkpoint was written; kind is step, best, final or interrupt."""

    def warn(self, message: str) -> None:
        """Something the user should know; the run goes on."""


def _state_path(output: Path) -> Path:
    return output / STATE_NAME


def read_state(output: Path) -> dict[str, Any] | None:
    """The resume state of the run in ``output``, or None when there is none."""
    path = _state_path(output)
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


def _atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        share_like_new(temporary)
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _remove_partial_writes(output: Path) -> None:
    """Delete the temporary files and folders of saves that a killed run left half-written."""
    for folder in (output, output / "checkpoints"):
        for leftover in folder.glob(".*.tmp"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _identity(recipe: Recipe, plans: Sequence[PhasePlan], data: TrainingData) -> dict[str, Any]:
    """What must match for a resumed run to continue the same training."""
    identity = recipe.to_dict()
    identity["plan"] = [{"lr": p.lr, "patch_size": p.patch_size, "global_batch": p.global_batch, "steps": p.steps}
                        for p in plans]
    identity["train_pairs"] = {name: counts[0] for name, counts in data.counts().items()}
    identity["val_pairs"] = len(data.val)
    return identity


def _with_recipe_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved run's identity plus the Recipe fields added since it was saved, at their defaults.

    A run saved before a field existed trained with that field's default (L1 before ``loss``, a random init
    before ``init_weights``, fp32 before ``precision``), so its absence is no difference.
    """
    defaults = {f.name: f.default for f in fields(Recipe) if isinstance(f.default, (str, int, float, bool, type(None)))}
    return {**defaults, **saved}


def _with_precision(recipe: Recipe, requested: str, device: torch.device, state: dict[str, Any] | None,
                    monitor: TrainMonitor) -> Recipe:
    """``recipe`` with the precision the run trains at: ``auto`` on resume keeps the saved run's (fp32 for runs
    saved before precision was recorded), otherwise it is resolved for ``device``."""
    if check_precision(requested) == "auto" and state is not None:
        return replace(recipe, precision=_with_recipe_defaults(state["identity"])["precision"])
    dtype, note = training_precision(requested, device)
    if note:
        monitor.warn(note)
    return replace(recipe, precision=precision_name(dtype))


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                out.append(f"{name}: run had {saved.get(key, '(none)')!r}, now {current.get(key, '(none)')!r}")
            else:
                out += _differences(saved[key], current[key], name)
        return out
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)) and len(saved) == len(current):
        return [d for i, (a, b) in enumerate(zip(saved, current, strict=True))
                for d in _differences(a, b, f"{prefix}[{i}]")]
    return [] if saved == current else [f"{prefix}: run had {saved!r}, now {current!r}"]


def _best_on_disk(output: Path) -> float | None:
    try:
        return float(json.loads((output / "best" / "config.json").read_text())["metadata"]["val_psnr_mean"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _trim_csv(path: Path, last_step: int) -> None:
    """Drop the rows a killed run wrote after its last save (they will be written again)."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) <= last_step]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)


class _Log:
    """CSV (and TensorBoard, when installed) logs of process 0."""

    def __init__(self, output: Path, degradations: Sequence[str], start_step: int) -> None:
        self.degradations = list(degradations)
        self.val_path, self.train_path = output / "val.csv", output / "train_log.csv"
        for path, header in ((self.val_path, ["step", "phase", "mean_psnr", *self.degradations]),
                             (self.train_path, ["step", "phase", "loss", "lr", "samples_per_s", "skipped_steps"])):
            _trim_csv(path, start_step)
            if not path.is_file():
                with path.open("w", newline="") as handle:
                    csv.writer(handle).writerow(header)
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output / "tensorboard"), purge_step=start_step + 1)
        except ImportError:
            pass

    def _append(self, path: Path, row: list[Any]) -> None:
        with path.open("a", newline="") as handle:
            csv.writer(handle).writerow(row)

    def train(self, step: int, phase: int, loss: float, lr: float, speed: float, skipped: int) -> None:
        self._append(self.train_path, [step, phase, f"{loss:.6f}", f"{lr:.3e}", f"{speed:.2f}", skipped])
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/loss", loss, step)
            self.tensorboard.add_scalar("train/lr", lr, step)

    def val(self, step: int, phase: int, mean: float | None, psnr: dict[str, float | None]) -> None:
        def text(value: float | None) -> str:
            return "" if value is None else f"{value:.4f}"

        self._append(self.val_path, [step, phase, text(mean), *(text(psnr[name]) for name in self.degradations)])
        if self.tensorboard is not None:
            for name, value in psnr.items():
                if value is not None:
                    self.tensorboard.add_scalar(f"val_psnr/{name}", value, step)
            if mean is not None:
                self.tensorboard.add_scalar("val_psnr/mean", mean, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def loader_processes(workers: int) -> dict[str, Any]:
    """DataLoader options for ``workers`` data-loading processes that start clean.

    Workers are spawned, never forked: a forked child inherits the parent's thread pools (OpenMP, OpenBLAS,
    OpenCV) with whatever locks their threads held at the fork, and hangs on the first call into them.
    OpenCV 5 made that certain (its pool waits forever in ``cv2.setNumThreads``); spawning fixes it for every
    library at once, for a start-up cost of about a second per worker per training phase.
    """
    if workers == 0:
        return {"num_workers": 0}
    return {"num_workers": workers, "multiprocessing_context": multiprocessing.get_context("spawn"),
            "worker_init_fn": _worker_init}


def train(recipe: Recipe, data: TrainingData, options: RunOptions, make_prompts: Callable[[], PromptBank],
          *, device: torch.device | str = "cpu", distributed: Distributed | None = None,
          monitor: TrainMonitor | None = None, initial_weights: dict[str, torch.Tensor] | None = None) -> TrainResult:
    """Run (or resume) a training run into ``options.output``; returns where the checkpoints are.

    ``make_prompts`` is called for a fresh run only; a resumed run reuses the codes saved with it.
    ``initial_weights`` (a state dict of ``recipe.config``'s network) replace the random init of a fresh run:
    fine-tuning. A resumed run continues from its own saved weights.
    """
    distributed = distributed or Distributed()
    monitor = monitor if (monitor is not None and distributed.is_main) else TrainMonitor()
    output = Path(options.output)
    device = torch.device(device)
    if options.keep_last < 1:
        raise InputError("--keep-last must be at least 1: resuming needs the last checkpoint")
    if options.save_every < 1:
        raise InputError("--save-every must be at least 1")
    state = read_state(output)
    recipe = _with_precision(recipe, options.precision, device, state if options.resume else None, monitor)
    plans = plan_phases(recipe, len(data.train), distributed.world_size)
    total_steps = plans[-1].end
    identity = _identity(recipe, plans, data)

    if state is not None and not options.resume:
        saved_total = sum(p["steps"] for p in state["identity"]["plan"])
        raise TrainingError(f"{output} already holds a training run (step {state['step']} of {saved_total}). "
                            "Pass --resume to continue it, or choose another --output.")
    if state is None and options.resume:
        raise TrainingError(f"nothing to resume in {output}: it has no {STATE_NAME}. Start a new run without --resume.")
    if state is not None:
        differences = _differences(_with_recipe_defaults(state["identity"]), identity)
        if differences:
            shown = "\n  ".join(differences[:15])
            raise TrainingError(f"cannot resume {output}: this command describes a different training run than the "
                                f"one saved there:\n  {shown}\nRun the same command as before (plus --resume), or "
                                "choose another --output for a new run.")
        if distributed.is_main:
            _remove_partial_writes(output)
        saved = load_checkpoint(output / state["weights"])
        if state["finished"]:
            if not (output / "final").is_dir():  # killed between the last two saves
                save_checkpoint(output / "final", saved.model, saved.prompts, saved.metadata)
            raise TrainingError(f"the run in {output} already finished at step {state['step']}; its checkpoint is "
                                f"{output / 'final'}. Choose another --output to train again.")
        prompts = saved.prompts
    else:
        prompts = make_prompts()
        if tuple(prompts.names) != tuple(recipe.degradations):
            raise InputError(f"prompt bank names {prompts.names} do not match the degradations {recipe.degradations}")
    if prompts.codes.shape[1] != recipe.config.text_dim:
        raise InputError(f"prompt codes are {prompts.codes.shape[1]}-d but the network takes {recipe.config.text_dim}-d")

    if options.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    trainer = Trainer(recipe.config, prompts.codes, seed=recipe.seed, betas=recipe.betas, grad_clip=recipe.grad_clip,
                      device=device, precision=recipe.precision, distributed=distributed,
                      max_bad_steps=options.max_bad_steps, loss=recipe.loss)
    step, best_psnr, best_step, skipped_total = 0, None, None, 0
    if state is None and initial_weights is not None:
        load_weights_strict(trainer.model, initial_weights, "the --init-weights checkpoint")
    if state is not None:
        trainer.model.load_state_dict(saved.model.state_dict())
        trainer.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            trainer.scaler.load_state_dict(state["scaler"])
        trainer.bad_steps = state["bad_steps"]
        _set_rng_state(state["rng"])
        step, skipped_total = state["step"], state["skipped_steps"]
        best_psnr, best_step = state["best_psnr"], state["best_step"]
        on_disk = _best_on_disk(output)
        if on_disk is not None and (best_psnr is None or on_disk > best_psnr):
            best_psnr = on_disk
    resumed_from = step if state is not None else None

    val_items = validation_images(data.val, recipe.degradations, options.val_size, recipe.seed, recipe.synthesis)
    log = None
    if distributed.is_main:
        output.mkdir(parents=True, exist_ok=True)
        log = _Log(output, recipe.degradations, step)
    monitor.started({"plans": plans, "total_steps": total_steps, "start_step": step, "counts": data.counts(),
                     "val_items": len(val_items), "frozen": trainer.frozen, "world_size": distributed.world_size,
                     "device": str(device), "prompt_encoder": prompts.encoder, "resumed": state is not None})

    def metadata(extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"tasks": list(recipe.degradations), "preset": recipe.preset, "steps": step,
                "total_steps": total_steps, "recipe": recipe.to_dict(), "trained_with": "dfpir train",
                "world_size": distributed.world_size, **(extra or {})}

    def save_resumable(kind: str = "step") -> None:
        if not distributed.is_main:
            return
        relative = f"checkpoints/step-{step:07d}"
        save_checkpoint(output / relative, trainer.model, prompts, metadata())
        _atomic_torch_save({
            "format": STATE_FORMAT, "version": STATE_VERSION, "step": step, "weights": relative,
            "finished": step >= total_steps, "identity": identity, "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict(), "scheduler": {"kind": "cosine-per-phase", "step": step},
            "rng": _rng_state(), "bad_steps": trainer.bad_steps, "skipped_steps": skipped_total,
            "samples_seen": sum(min(max(step - p.first_step, 0), p.steps) * p.global_batch for p in plans),
            "best_psnr": best_psnr, "best_step": best_step}, _state_path(output))
        monitor.saved(output / relative, kind)
        kept = sorted((output / "checkpoints").glob("step-*"))
        for old in kept[:-options.keep_last]:
            if old.name != Path(relative).name:
                shutil.rmtree(old, ignore_errors=True)

    last_val: dict[str, float | None] = {}

    def run_validation(phase: int) -> None:
        nonlocal best_psnr, best_step, last_val
        if not val_items:
            return
        values = trainer.validate(val_items, len(recipe.degradations))
        last_val = dict(zip(recipe.degradations, values, strict=True))
        known = [v for v in values if v is not None]
        mean = sum(known) / len(known) if known else None
        monitor.validated(step, last_val)
        if log is not None:
            log.val(step, phase, mean, last_val)
        if mean is not None and (best_psnr is None or mean > best_psnr):
            best_psnr, best_step = mean, step
            if distributed.is_main:
                save_checkpoint(output / "best", trainer.model, prompts,
                                metadata({"val_psnr": last_val, "val_psnr_mean": mean}))
                monitor.saved(output / "best", "best")

    unreadable = 0
    last_saved = step
    try:
        for plan in plans:
            if step >= plan.end or plan.steps == 0:
                continue
            monitor.phase(plan)
            dataset = PatchDataset(data.train, recipe.degradations, plan.patch_size, recipe.seed, plan.index,
                                   recipe.flips, synthesis=recipe.synthesis, identity=recipe.identity)
            sampler = GlobalBatchSampler(len(dataset), plan.batch_size, distributed.rank, distributed.world_size,
                                         recipe.seed, plan.index, step - plan.first_step, plan.steps)
            loader = DataLoader(dataset, batch_sampler=sampler, pin_memory=device.type == "cuda",
                                **loader_processes(options.workers))
            window_loss, window_steps, window_count, window_start = 0.0, 0, 0, time.perf_counter()
            for degraded, clean, tasks, bad in loader:
                lr = learning_rate(step, plans, recipe.min_lr, recipe.warmup_steps)
                result = trainer.step(degraded, clean, tasks, lr)
                step += 1
                unreadable += int(bad.sum())
                if result.skipped:
                    skipped_total += 1
                    monitor.warn(f"step {step}: the loss or gradients were NaN/inf; the update was skipped")
                else:
                    window_loss += result.loss
                    window_steps += 1
                window_count += 1
                speed = window_count * plan.global_batch / max(time.perf_counter() - window_start, 1e-9)
                monitor.step(StepInfo(step, total_steps, plan.index, result.loss, lr, speed, result.skipped))
                if step % options.log_every == 0 or step == plan.end:
                    if log is not None and window_steps:
                        log.train(step, plan.index, window_loss / window_steps, lr, speed, skipped_total)
                    window_loss, window_steps, window_count, window_start = 0.0, 0, 0, time.perf_counter()
                if options.val_every and step % options.val_every == 0 and step < total_steps:
                    run_validation(plan.index)
                if step % options.save_every == 0 and step < total_steps:
                    save_resumable()
                    last_saved = step
    except KeyboardInterrupt:
        if not distributed.active and step > last_saved:
            save_resumable("interrupt")
        raise
    run_validation(plans[-1].index)
    save_resumable("step")
    final = output / "final"
    if distributed.is_main:
        save_checkpoint(final, trainer.model, prompts,
                        metadata({"val_psnr": last_val, "best_val_psnr_mean": best_psnr, "best_step": best_step}))
        monitor.saved(final, "final")
    if distributed.active:
        _check_in_sync(trainer.model)
        dist.barrier()
    if log is not None:
        log.close()
    if unreadable:
        monitor.warn(f"{unreadable} training read(s) hit an unreadable file and used the next pair instead")
    return TrainResult(output, final, output / "best" if best_psnr is not None else None, best_psnr, last_val, step,
                       skipped_total, unreadable, resumed_from)


def parameter_fingerprint(model: torch.nn.Module) -> torch.Tensor:
    """Per-parameter (sum, sum of squares) in float64: equal in every process when DDP works."""
    return torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().square().sum()])
                        for p in model.parameters()])


def _check_in_sync(model: torch.nn.Module) -> None:
    """Compare the processes' weights; they must be bit-identical after DDP's averaged updates."""
    mine = parameter_fingerprint(model)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    if any(not torch.equal(mine, other) for other in gathered):
        raise TrainingError("the processes' weights differ at the end of the run: data-parallel training went out "
                            "of sync (a bug; please report it with your torchrun command)")
