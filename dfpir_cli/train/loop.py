"""Training DFPIR: a run of the recipe (:mod:`.recipe`), resumable, mixed precision, data-parallel under ``torchrun``.

:func:`train` lays the recipe's phases out in steps, starts or resumes the run (:mod:`.state`), feeds the
:class:`~dfpir_cli.train.trainer.Trainer` one batch at a time, validates, logs (:mod:`.log`) and saves.

Output folder of a run::

    checkpoints/step-0001000/   checkpoint folders (config.json + model.safetensors), the last K kept
    best/                       the checkpoint with the best mean validation PSNR so far
    final/                      the checkpoint at the end of the run
    resume.pt                   optimizer, scheduler, step, RNG states; its weights are in checkpoints/
    val.csv, train_log.csv      validation PSNR per task, and loss / lr / speed over time
    tensorboard/                the same, when TensorBoard is installed
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..base.distributed import Distributed
from ..base.precision import check_precision, precision_name
from ..data.train_sets import GlobalBatchSampler, PatchDataset, TrainingData, validation_images
from ..errors import InputError, TrainingError
from ..weights.checkpoint import PromptBank, load_checkpoint, load_weights_strict, save_checkpoint
from .log import RunLog
from .recipe import PhasePlan, Recipe, learning_rate, plan_phases
from .state import (
    STATE_FORMAT,
    STATE_NAME,
    STATE_VERSION,
    atomic_torch_save,
    best_on_disk,
    identity_differences,
    read_state,
    remove_partial_writes,
    rng_state,
    run_identity,
    set_rng_state,
    state_path,
    with_recipe_defaults,
)
from .trainer import Trainer, check_in_sync, training_precision


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


def _with_precision(recipe: Recipe, requested: str, device: torch.device, state: dict[str, Any] | None,
                    monitor: TrainMonitor) -> Recipe:
    """``recipe`` with the precision the run trains at: ``auto`` on resume keeps the saved run's (fp32 for runs
    saved before precision was recorded), otherwise it is resolved for ``device``."""
    if check_precision(requested) == "auto" and state is not None:
        return replace(recipe, precision=with_recipe_defaults(state["identity"])["precision"])
    dtype, note = training_precision(requested, device)
    if note:
        monitor.warn(note)
    return replace(recipe, precision=precision_name(dtype))


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
    identity = run_identity(recipe, plans, data)

    if state is not None and not options.resume:
        saved_total = sum(p["steps"] for p in state["identity"]["plan"])
        raise TrainingError(f"{output} already holds a training run (step {state['step']} of {saved_total}). "
                            "Pass --resume to continue it, or choose another --output.")
    if state is None and options.resume:
        raise TrainingError(f"nothing to resume in {output}: it has no {STATE_NAME}. Start a new run without --resume.")
    if state is not None:
        differences = identity_differences(with_recipe_defaults(state["identity"]), identity)
        if differences:
            shown = "\n  ".join(differences[:15])
            raise TrainingError(f"cannot resume {output}: this command describes a different training run than the "
                                f"one saved there:\n  {shown}\nRun the same command as before (plus --resume), or "
                                "choose another --output for a new run.")
        if distributed.is_main:
            remove_partial_writes(output)
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
        set_rng_state(state["rng"])
        step, skipped_total = state["step"], state["skipped_steps"]
        best_psnr, best_step = state["best_psnr"], state["best_step"]
        on_disk = best_on_disk(output)
        if on_disk is not None and (best_psnr is None or on_disk > best_psnr):
            best_psnr = on_disk
    resumed_from = step if state is not None else None

    val_items = validation_images(data.val, recipe.degradations, options.val_size, recipe.seed, recipe.synthesis)
    log = None
    if distributed.is_main:
        output.mkdir(parents=True, exist_ok=True)
        log = RunLog(output, recipe.degradations, step)
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
        atomic_torch_save({
            "format": STATE_FORMAT, "version": STATE_VERSION, "step": step, "weights": relative,
            "finished": step >= total_steps, "identity": identity, "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict(), "scheduler": {"kind": "cosine-per-phase", "step": step},
            "rng": rng_state(), "bad_steps": trainer.bad_steps, "skipped_steps": skipped_total,
            "samples_seen": sum(min(max(step - p.first_step, 0), p.steps) * p.global_batch for p in plans),
            "best_psnr": best_psnr, "best_step": best_step}, state_path(output))
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
        check_in_sync(trainer.model)
        dist.barrier()
    if log is not None:
        log.close()
    if unreadable:
        monitor.warn(f"{unreadable} training read(s) hit an unreadable file and used the next pair instead")
    return TrainResult(output, final, output / "best" if best_psnr is not None else None, best_psnr, last_val, step,
                       skipped_total, unreadable, resumed_from)


