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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..base.distributed import Distributed
from ..base.precision import check_precision, precision_name
from ..data.train_sets import GlobalBatchSampler, PatchDataset, TrainingData, validation_images
from ..errors import InputError, TrainingError
from ..weights.checkpoint import Checkpoint, PromptBank, load_checkpoint, load_weights_strict, save_checkpoint
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


@dataclass(frozen=True)
class OwnWeights:
    """A run that trains one prompt's own weights (``dfpir train --own-weights``): ``modules`` of ``base``'s
    network, started from that prompt's own copy where it has one, else from the shared one; the rest is frozen.
    Every checkpoint it writes is ``base`` (its shared network, every prompt, its metadata) with the trained
    modules as the prompt's own weights (:attr:`Checkpoint.prompt_weights`): the other prompts restore as before.
    """

    base: Checkpoint
    prompt: str  # canonical name; a prompt base lacks is added with ``code``
    text: str
    code: torch.Tensor  # (text_dim,)
    modules: tuple[str, ...]  # top-level module names of the network

    def bank(self) -> PromptBank:
        """The one prompt the run trains."""
        return PromptBank((self.prompt,), (self.text,), self.code[None], self.base.prompts.encoder)

    def save(self, directory: Path, model: torch.nn.Module, metadata: dict[str, Any]) -> Path:
        bank = self.base.prompts
        names, texts, codes = list(bank.names), list(bank.texts), list(bank.codes)
        if self.prompt not in names:
            names.append(self.prompt)
            texts.append(self.text)
            codes.append(self.code)
        codes[names.index(self.prompt)] = self.code
        # save_checkpoint copies them to the CPU
        own = {key: value for key, value in model.state_dict().items() if key.split(".")[0] in self.modules}
        notes = self.base.metadata.get("prompt_weights")
        notes = {**(notes if isinstance(notes, dict) else {}),
                 self.prompt: f"its own {', '.join(self.modules)}, trained by dfpir train --own-weights"}
        merged = {**self.base.metadata, **metadata, "tasks": names, "prompt_weights": notes}
        return save_checkpoint(directory, self.base.model, PromptBank(tuple(names), tuple(texts), torch.stack(codes),
                                                                       bank.encoder),
                               merged, prompt_weights={**self.base.prompt_weights, self.prompt: own})


def train(recipe: Recipe, data: TrainingData, options: RunOptions, make_prompts: Callable[[], PromptBank],
          *, device: torch.device | str = "cpu", distributed: Distributed | None = None,
          monitor: TrainMonitor | None = None, initial_weights: dict[str, torch.Tensor] | None = None,
          own: OwnWeights | None = None) -> TrainResult:
    """Run (or resume) a training run into ``options.output``; returns where the checkpoints are.

    ``make_prompts`` is called for a fresh run only; a resumed run reuses the codes saved with it.
    ``initial_weights`` (a state dict of ``recipe.config``'s network) replace the random init of a fresh run:
    fine-tuning. A resumed run continues from its own saved weights. ``own``: the run trains one prompt's own
    weights (:class:`OwnWeights`; ``recipe.own_weights`` names the modules) and writes checkpoints with them.
    """
    distributed = distributed or Distributed()
    monitor = monitor if (monitor is not None and distributed.is_main) else TrainMonitor()
    output = Path(options.output)
    device = torch.device(device)
    _check_options(options)
    state = read_state(output)
    recipe = _with_precision(recipe, options.precision, device, state if options.resume else None, monitor)
    plans = plan_phases(recipe, len(data.train), distributed.world_size)
    identity = run_identity(recipe, plans, data)
    saved = _saved_run(output, state, options.resume, identity, distributed)
    if own is not None:
        prompts = own.bank()
    else:
        prompts = saved.prompts if saved is not None else _new_prompts(make_prompts, recipe)
    if prompts.codes.shape[1] != recipe.config.text_dim:
        raise InputError(f"prompt codes are {prompts.codes.shape[1]}-d but the network takes {recipe.config.text_dim}-d")
    _set_determinism(options.deterministic, device)

    trainer = Trainer(recipe.config, prompts.codes, seed=recipe.seed, betas=recipe.betas, grad_clip=recipe.grad_clip,
                      device=device, precision=recipe.precision, distributed=distributed,
                      max_bad_steps=options.max_bad_steps, loss=recipe.loss, train_only=recipe.own_weights)
    progress = _Progress()
    start = own.base.state_of(own.prompt) if own is not None else initial_weights  # as the prompt runs it
    if state is None and start is not None:
        load_weights_strict(trainer.model, start, "the --init-weights checkpoint")
    if state is not None and saved is not None:
        progress = _resume(trainer, state, saved.state_of(own.prompt if own is not None else None), output)
    resumed_from = progress.step if state is not None else None

    val_items = validation_images(data.val, recipe.degradations, options.val_size, recipe.seed, recipe.synthesis)
    log = None
    if distributed.is_main:
        output.mkdir(parents=True, exist_ok=True)
        log = RunLog(output, recipe.degradations, progress.step)
    monitor.started({"plans": plans, "total_steps": plans[-1].end, "start_step": progress.step,
                     "counts": data.counts(), "val_items": len(val_items), "frozen": trainer.frozen,
                     "own_weights": recipe.own_weights,
                     "world_size": distributed.world_size, "device": str(device), "prompt_encoder": prompts.encoder,
                     "resumed": state is not None})
    run = _Run(recipe, plans, identity, options, data, trainer, prompts, distributed, monitor, val_items, log, progress,
               own)
    try:
        for plan in plans:
            if progress.step < plan.end and plan.steps > 0:
                run.phase(plan, device)
    except KeyboardInterrupt:
        if not distributed.active and progress.step > progress.last_saved:
            run.save_resumable("interrupt")
        raise
    return run.finish(resumed_from)


def _check_options(options: RunOptions) -> None:
    if options.keep_last < 1:
        raise InputError("--keep-last must be at least 1: resuming needs the last checkpoint")
    if options.save_every < 1:
        raise InputError("--save-every must be at least 1")


def _saved_run(output: Path, state: dict[str, Any] | None, resume: bool, identity: dict[str, Any],
               distributed: Distributed) -> Checkpoint | None:
    """The checkpoint a resumed run continues from (None: a fresh run), once the saved run is known to be the
    same training as this one and not finished."""
    if state is not None and not resume:
        saved_total = sum(p["steps"] for p in state["identity"]["plan"])
        raise TrainingError(f"{output} already holds a training run (step {state['step']} of {saved_total}). "
                            "Pass --resume to continue it, or choose another --output.")
    if state is None and resume:
        raise TrainingError(f"nothing to resume in {output}: it has no {STATE_NAME}. Start a new run without --resume.")
    if state is None:
        return None
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
            save_checkpoint(output / "final", saved.model, saved.prompts, saved.metadata,
                            prompt_weights=saved.prompt_weights)
        raise TrainingError(f"the run in {output} already finished at step {state['step']}; its checkpoint is "
                            f"{output / 'final'}. Choose another --output to train again.")
    return saved


def _new_prompts(make_prompts: Callable[[], PromptBank], recipe: Recipe) -> PromptBank:
    prompts = make_prompts()
    if tuple(prompts.names) != tuple(recipe.degradations):
        raise InputError(f"prompt bank names {prompts.names} do not match the degradations {recipe.degradations}")
    return prompts


def _set_determinism(deterministic: bool, device: torch.device) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


@dataclass
class _Progress:
    """Where a run stands, besides its weights and optimizer."""

    step: int = 0  # steps done
    skipped: int = 0  # steps whose update was skipped (NaN/inf)
    best_psnr: float | None = None  # best mean validation PSNR so far
    best_step: int | None = None
    last_val: dict[str, float | None] = field(default_factory=dict)  # the last validation, per degradation
    unreadable: int = 0  # training reads that hit an unreadable file
    last_saved: int = 0  # the step of the last resumable save


def _resume(trainer: Trainer, state: dict[str, Any], weights: dict[str, torch.Tensor], output: Path) -> _Progress:
    """Put the saved run's weights, optimizer, scaler and RNG states back; where it stood."""
    trainer.model.load_state_dict(weights)
    trainer.optimizer.load_state_dict(state["optimizer"])
    if state["scaler"]:
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.bad_steps = state["bad_steps"]
    set_rng_state(state["rng"])
    progress = _Progress(step=state["step"], skipped=state["skipped_steps"], best_psnr=state["best_psnr"],
                         best_step=state["best_step"], last_saved=state["step"])
    on_disk = best_on_disk(output)
    if on_disk is not None and (progress.best_psnr is None or on_disk > progress.best_psnr):
        progress.best_psnr = on_disk
    return progress


class _Run:
    """One run's parts that its phases share: the trainer, the prompts, the logs, and where it stands."""

    def __init__(self, recipe: Recipe, plans: list[PhasePlan], identity: dict[str, Any], options: RunOptions,
                 data: TrainingData, trainer: Trainer, prompts: PromptBank, distributed: Distributed, monitor: TrainMonitor,
                 val_items: list[tuple[int, torch.Tensor, torch.Tensor]], log: RunLog | None,
                 progress: _Progress, own: OwnWeights | None = None) -> None:
        self.own = own
        self.recipe, self.plans, self.identity, self.options = recipe, plans, identity, options
        self.trainer, self.prompts, self.distributed, self.monitor = trainer, prompts, distributed, monitor
        self.data, self.val_items, self.log, self.progress = data, val_items, log, progress
        self.output = Path(options.output)
        self.total_steps = plans[-1].end

    def metadata(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        recipe = self.recipe
        return {"tasks": list(recipe.degradations), "preset": recipe.preset, "steps": self.progress.step,
                "total_steps": self.total_steps, "recipe": recipe.to_dict(), "trained_with": "dfpir train",
                "world_size": self.distributed.world_size, **(extra or {})}

    def save(self, directory: Path, metadata: dict[str, Any]) -> None:
        """The trained network as a checkpoint: itself, or (``--own-weights``) the base with the prompt's own."""
        if self.own is not None:
            self.own.save(directory, self.trainer.model, metadata)
        else:
            save_checkpoint(directory, self.trainer.model, self.prompts, metadata)

    def save_resumable(self, kind: str = "step") -> None:
        """A step checkpoint and resume.pt after it; only the last ``keep_last`` step checkpoints are kept."""
        if not self.distributed.is_main:
            return
        output, trainer, progress, step = self.output, self.trainer, self.progress, self.progress.step
        relative = f"checkpoints/step-{step:07d}"
        self.save(output / relative, self.metadata())
        atomic_torch_save({
            "format": STATE_FORMAT, "version": STATE_VERSION, "step": step, "weights": relative,
            "finished": step >= self.total_steps, "identity": self.identity,
            "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict(), "scheduler": {"kind": "cosine-per-phase", "step": step},
            "rng": rng_state(), "bad_steps": trainer.bad_steps, "skipped_steps": progress.skipped,
            "samples_seen": sum(min(max(step - p.first_step, 0), p.steps) * p.global_batch for p in self.plans),
            "best_psnr": progress.best_psnr, "best_step": progress.best_step}, state_path(output))
        self.monitor.saved(output / relative, kind)
        kept = sorted((output / "checkpoints").glob("step-*"))
        for old in kept[:-self.options.keep_last]:
            if old.name != Path(relative).name:
                shutil.rmtree(old, ignore_errors=True)

    def validate(self, phase: int) -> None:
        """Mean PSNR per degradation on the held-out images; a new best mean is saved in best/."""
        progress = self.progress
        if not self.val_items:
            return
        values = self.trainer.validate(self.val_items, len(self.recipe.degradations))
        progress.last_val = dict(zip(self.recipe.degradations, values, strict=True))
        known = [v for v in values if v is not None]
        mean = sum(known) / len(known) if known else None
        self.monitor.validated(progress.step, progress.last_val)
        if self.log is not None:
            self.log.val(progress.step, phase, mean, progress.last_val)
        if mean is not None and (progress.best_psnr is None or mean > progress.best_psnr):
            progress.best_psnr, progress.best_step = mean, progress.step
            if self.distributed.is_main:
                self.save(self.output / "best", self.metadata({"val_psnr": progress.last_val, "val_psnr_mean": mean}))
                self.monitor.saved(self.output / "best", "best")

    def phase(self, plan: PhasePlan, device: torch.device) -> None:
        """Train ``plan``'s steps from where the run stands, logging, validating and saving as asked."""
        recipe, options, progress, distributed = self.recipe, self.options, self.progress, self.distributed
        self.monitor.phase(plan)
        dataset = PatchDataset(self.data.train, recipe.degradations, plan.patch_size, recipe.seed, plan.index,
                               recipe.flips, synthesis=recipe.synthesis, identity=recipe.identity)
        sampler = GlobalBatchSampler(len(dataset), plan.batch_size, distributed.rank, distributed.world_size,
                                     recipe.seed, plan.index, progress.step - plan.first_step, plan.steps)
        loader = DataLoader(dataset, batch_sampler=sampler, pin_memory=device.type == "cuda",
                            **loader_processes(options.workers))
        window_loss, window_steps, window_count, window_start = 0.0, 0, 0, time.perf_counter()
        for degraded, clean, tasks, bad in loader:
            lr = learning_rate(progress.step, self.plans, recipe.min_lr, recipe.warmup_steps)
            result = self.trainer.step(degraded, clean, tasks, lr)
            progress.step += 1
            step = progress.step
            progress.unreadable += int(bad.sum())
            if result.skipped:
                progress.skipped += 1
                self.monitor.warn(f"step {step}: the loss or gradients were NaN/inf; the update was skipped")
            else:
                window_loss += result.loss
                window_steps += 1
            window_count += 1
            speed = window_count * plan.global_batch / max(time.perf_counter() - window_start, 1e-9)
            self.monitor.step(StepInfo(step, self.total_steps, plan.index, result.loss, lr, speed, result.skipped))
            if step % options.log_every == 0 or step == plan.end:
                if self.log is not None and window_steps:
                    self.log.train(step, plan.index, window_loss / window_steps, lr, speed, progress.skipped)
                window_loss, window_steps, window_count, window_start = 0.0, 0, 0, time.perf_counter()
            if options.val_every and step % options.val_every == 0 and step < self.total_steps:
                self.validate(plan.index)
            if step % options.save_every == 0 and step < self.total_steps:
                self.save_resumable()
                progress.last_saved = step

    def finish(self, resumed_from: int | None) -> TrainResult:
        """The last validation and saves (final/), the processes' weights compared, the logs closed."""
        progress, output = self.progress, self.output
        self.validate(self.plans[-1].index)
        self.save_resumable("step")
        final = output / "final"
        if self.distributed.is_main:
            self.save(final, self.metadata({"val_psnr": progress.last_val, "best_val_psnr_mean": progress.best_psnr,
                                            "best_step": progress.best_step}))
            self.monitor.saved(final, "final")
        if self.distributed.active:
            check_in_sync(self.trainer.model)
            dist.barrier()
        if self.log is not None:
            self.log.close()
        if progress.unreadable:
            self.monitor.warn(f"{progress.unreadable} training read(s) hit an unreadable file and used the next pair "
                              "instead")
        return TrainResult(output, final, output / "best" if progress.best_psnr is not None else None,
                           progress.best_psnr, progress.last_val, progress.step, progress.skipped, progress.unreadable,
                           resumed_from)
