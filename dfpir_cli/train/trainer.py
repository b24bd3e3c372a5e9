"""One optimisation step: the network, Adam, mixed precision, the NaN guard and DDP; no files, no schedule.

The DGM's linear layers receive no gradient (``topk`` indices carry none, DESIGN.md section 2), so they
are frozen: the optimizer never touches them, DDP needs no unused-parameter search, and each prompt's
channel order stays the one its initial weights give, as in the reference training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..base.distributed import Distributed
from ..base.precision import autocast, resolve_precision
from ..errors import TrainingError
from ..model import DFPIR, DFPIRConfig
from .recipe import LOSSES


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
                 distributed: Distributed | None = None, max_bad_steps: int = 5, loss: str = "l1",
                 train_only: Sequence[str] = ()) -> None:
        """``train_only``: the top-level modules that train (a prompt's own weights, ``--own-weights``); the
        others are frozen. (): every module."""
        self.device = torch.device(device)
        self.distributed = distributed or Distributed()
        self.autocast_dtype, self.precision_note = training_precision(precision, self.device)
        use_scaler = self.autocast_dtype is torch.float16
        torch.manual_seed(seed)  # every process builds the same network
        self.model = DFPIR(config)
        trainable = {name for name in trainable_parameters(self.model)
                     if not train_only or name.split(".")[0] in train_only}
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


def parameter_fingerprint(model: torch.nn.Module) -> torch.Tensor:
    """Per-parameter (sum, sum of squares) in float64: equal in every process when DDP works."""
    return torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().square().sum()])
                        for p in model.parameters()])


def check_in_sync(model: torch.nn.Module) -> None:
    """Compare the processes' weights; they must be bit-identical after DDP's averaged updates."""
    mine = parameter_fingerprint(model)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    if any(not torch.equal(mine, other) for other in gathered):
        raise TrainingError("the processes' weights differ at the end of the run: data-parallel training went out "
                            "of sync (a bug; please report it with your torchrun command)")
