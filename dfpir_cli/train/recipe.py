"""The training recipe: the paper's schedule as phases, the losses, everything that decides the trained weights.

DESIGN.md section 4: L1 loss, Adam (0.9, 0.999), lr 1e-4, 128 px patches, batch 5, random flips, a cosine
schedule, 80 epochs; then 5 epochs at lr 1e-5, 192 px, batch 3. Every value is a field of :class:`Recipe`;
:func:`plan_phases` lays the phases end to end in steps and :func:`learning_rate` gives each step its rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..data.synthesis import SYNTHESIS_MODELS
from ..data.train_sets import steps_for_epochs
from ..errors import InputError
from ..model import DFPIR, DFPIRConfig


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
    own_weights: tuple[str, ...] = ()  # modules trained as the prompt's own copy, the rest frozen (): the whole network

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
        data["own_weights"] = list(self.own_weights)
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
