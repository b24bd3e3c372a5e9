"""Training loop: it learns, it resumes exactly, it refuses a different run, it survives NaN steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MICRO, make_prompts
from test_train_data import write_image

from dfpir_cli.data.train_sets import GlobalBatchSampler, PatchDataset, build_training_data
from dfpir_cli.errors import InputError, TrainingError
from dfpir_cli.train.loop import RunOptions, TrainMonitor, train
from dfpir_cli.train.recipe import Phase, PhasePlan, Recipe, learning_rate, plan_phases
from dfpir_cli.train.state import read_state
from dfpir_cli.train.trainer import Trainer
from dfpir_cli.weights.checkpoint import load_checkpoint

NAMES = ("noise25", "rain")


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    for i in range(5):
        write_image(folder / f"photo{i}.png", height=48, width=56, seed=i)
    return folder


@pytest.fixture(scope="module")
def data(clean_dir: Path):
    return build_training_data(NAMES, clean_dir=clean_dir, patch_size=40, val_per_task=1, seed=0)


def prompts():
    return make_prompts(MICRO.text_dim, NAMES)


RECIPE = Recipe(NAMES, MICRO, (Phase(2e-3, 32, 2, steps=8), Phase(5e-4, 40, 2, steps=6)), seed=1,
                prompt_encoder="random")


def options(output: Path, **overrides) -> RunOptions:
    return RunOptions(output, **{"workers": 0, "val_every": 4, "save_every": 5, "keep_last": 2, "log_every": 2,
                                 "val_size": 48, **overrides})


def batch(dataset: PatchDataset, items: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Degraded images, clean images and task indices of ``dataset``'s ``(position, index)`` items."""
    samples = [dataset[item] for item in items]
    return (torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]),
            torch.tensor([s[2] for s in samples]))


class KillAt(TrainMonitor):
    """Stands in for a crash or Ctrl-C in the middle of a run."""

    def __init__(self, step: int, error: type[BaseException]) -> None:
        self.at, self.error = step, error

    def step(self, info) -> None:
        if info.step == self.at:
            raise self.error("killed")


def test_schedule_is_cosine_per_phase_with_warmup() -> None:
    plans = [PhasePlan(0, 1e-4, 128, 5, 5, 0, 100), PhasePlan(1, 1e-5, 192, 3, 3, 100, 10)]
    assert learning_rate(0, plans, 1e-6) == pytest.approx(1e-4)
    assert learning_rate(50, plans, 1e-6) == pytest.approx((1e-4 + 1e-6) / 2)
    assert learning_rate(99, plans, 1e-6) < 2e-6
    assert learning_rate(100, plans, 1e-6) == pytest.approx(1e-5)
    assert learning_rate(0, plans, 1e-6, warmup_steps=9) == pytest.approx(1e-5)
    assert plan_phases(Recipe(NAMES, MICRO, (Phase(1e-4, 32, 5, epochs=2), Phase(1e-5, 48, 3, epochs=0))), 11, 2)[0] \
        .steps == 3  # 22 pairs, global batch 10
    with pytest.raises(InputError, match="multiple of 8"):
        Recipe(NAMES, MICRO, (Phase(1e-4, 36, 5, steps=1),))
    with pytest.raises(InputError, match="choose one of classic, realistic"):
        Recipe(NAMES, MICRO, synthesis="vivid")
    with pytest.raises(InputError, match="--identity is a share"):
        Recipe(NAMES, MICRO, identity=1.0)


def test_a_few_dozen_steps_lower_the_loss_and_the_dgm_stays_frozen(data) -> None:
    trainer = Trainer(MICRO, prompts().codes, seed=0)
    assert trainer.frozen and all("linear_layer" in name for name in trainer.frozen)
    dgm_before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if name in trainer.frozen}
    held = PatchDataset(data.train, NAMES, 32, seed=99, phase=7)
    degraded, clean, tasks = batch(held, [(i, i % len(held)) for i in range(8)])

    def eval_loss() -> float:
        with torch.no_grad():
            return float((trainer.model(degraded, trainer.codes[tasks]) - clean).abs().mean())

    before = eval_loss()
    dataset = PatchDataset(data.train, NAMES, 32, seed=0, phase=0)
    for items in GlobalBatchSampler(len(dataset), 4, 0, 1, seed=0, phase=0, start_step=0, steps=40):
        result = trainer.step(*batch(dataset, items), lr=2e-3)
        assert not result.skipped
    after = eval_loss()
    assert after < 0.8 * before, (before, after)
    for name, parameter in trainer.model.named_parameters():
        if name in dgm_before:
            assert torch.equal(parameter, dgm_before[name])


def test_bf16_autocast_steps_on_cpu_lower_the_loss_like_fp32_with_finite_weights(data) -> None:
    dataset = PatchDataset(data.train, NAMES, 32, seed=0, phase=0)
    degraded, clean, tasks = batch(dataset, [(i, i) for i in range(4)])
    losses = {}
    for precision in ("bf16", "fp32"):
        trainer = Trainer(MICRO, prompts().codes, seed=0, precision=precision)
        losses[precision] = [trainer.step(degraded, clean, tasks, lr=2e-3).loss for _ in range(8)]
        assert all(p.dtype is torch.float32 and torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.autocast_dtype is torch.float32
    bf16, fp32 = losses["bf16"], losses["fp32"]
    assert bf16[-1] < 0.85 * bf16[0], bf16
    assert abs(bf16[-1] - fp32[-1]) < 0.05 * fp32[-1], losses  # the same descent, to bf16's precision


def test_training_precision_names() -> None:
    with pytest.raises(InputError, match="choose one of auto, fp32, bf16, fp16"):
        Trainer(MICRO, prompts().codes, precision="fp8")
    fp16 = Trainer(MICRO, prompts().codes, precision="fp16")  # needs CUDA's loss scaling: fp32 on a CPU
    assert fp16.autocast_dtype is torch.float32 and "fp16 needs a GPU" in fp16.precision_note


@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_the_step_minimises_the_chosen_loss(data, loss: str) -> None:
    """The reported loss is the chosen one on the batch, before the update."""
    trainer = Trainer(MICRO, prompts().codes, seed=0, loss=loss)
    dataset = PatchDataset(data.train, NAMES, 32, seed=0, phase=0)
    degraded, clean, tasks = batch(dataset, [(i, i) for i in range(4)])
    with torch.no_grad():
        error = trainer.model(degraded, trainer.codes[tasks]) - clean
    expected = error.abs().mean() if loss == "l1" else error.pow(2).mean()
    assert trainer.step(degraded, clean, tasks, lr=1e-3).loss == pytest.approx(float(expected), rel=1e-5)


def test_nan_steps_are_skipped_then_the_run_stops(data) -> None:
    trainer = Trainer(MICRO, prompts().codes, seed=0, max_bad_steps=3)
    weights = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    clean = torch.rand(2, 3, 16, 16)
    poisoned = clean.clone()
    poisoned[0, 0, 0, 0] = float("nan")
    tasks = torch.tensor([0, 1])
    assert trainer.step(poisoned, clean, tasks, 1e-3).skipped
    assert all(torch.equal(p, weights[name]) for name, p in trainer.model.named_parameters())
    assert trainer.step(poisoned, clean, tasks, 1e-3).skipped
    assert not trainer.step(clean, clean, tasks, 1e-3).skipped  # a good step resets the count
    trainer.step(poisoned, clean, tasks, 1e-3)
    trainer.step(poisoned, clean, tasks, 1e-3)
    with pytest.raises(TrainingError, match="NaN/inf for 3 steps in a row"):
        trainer.step(poisoned, clean, tasks, 1e-3)


def test_resume_after_interruptions_matches_an_uninterrupted_run(tmp_path: Path, data) -> None:
    straight = train(RECIPE, data, options(tmp_path / "straight"), prompts)
    assert straight.steps == 14 and straight.best is not None

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C saves the state where it stands
        train(RECIPE, data, options(broken), prompts, monitor=KillAt(7, KeyboardInterrupt))
    assert read_state(broken)["step"] == 7
    with pytest.raises(RuntimeError):  # a crash in phase 2 loses the steps since the last save (10)
        train(RECIPE, data, options(broken, resume=True), prompts, monitor=KillAt(13, RuntimeError))
    assert read_state(broken)["step"] == 10
    resumed = train(RECIPE, data, options(broken, resume=True), prompts)
    assert resumed.resumed_from == 10 and resumed.steps == 14

    expected, actual = load_checkpoint(straight.final), load_checkpoint(resumed.final)
    for (name, a), b in zip(expected.model.state_dict().items(), actual.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert actual.metadata["tasks"] == list(NAMES) and actual.metadata["steps"] == 14
    # The logs of the killed steps were rewritten, not duplicated.
    assert (broken / "val.csv").read_text() == (tmp_path / "straight" / "val.csv").read_text()
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == ["step-0000010", "step-0000014"]
    state = read_state(broken)
    assert state["finished"] and state["samples_seen"] == 14 * 2

    with pytest.raises(TrainingError, match="already finished"):
        train(RECIPE, data, options(broken, resume=True), prompts)
    with pytest.raises(TrainingError, match="already holds a training run"):
        train(RECIPE, data, options(broken), prompts)


def test_resume_refuses_a_different_run(tmp_path: Path, data) -> None:
    output = tmp_path / "run"
    recipe = Recipe(NAMES, MICRO, (Phase(1e-3, 32, 2, steps=3),), seed=1, prompt_encoder="random")
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(recipe, data, options(output, resume=True), prompts)
    with pytest.raises(RuntimeError):
        train(recipe, data, options(output, save_every=1), prompts, monitor=KillAt(2, RuntimeError))
    different = Recipe(NAMES, MICRO, (Phase(5e-4, 32, 4, steps=3),), seed=1, prompt_encoder="random")
    with pytest.raises(TrainingError, match=r"(?s)phases\[0\]\.batch_size: run had 2, now 4.*phases\[0\]\.lr"):
        train(different, data, options(output, resume=True), prompts)
    assert read_state(output)["step"] == 1  # the refused resume touched nothing


def test_a_run_saved_before_newer_recipe_fields_resumes(tmp_path: Path, data) -> None:
    """Fields added to Recipe later (loss, init_weights, ...) count as their defaults in an older run's state."""
    output = tmp_path / "run"
    with pytest.raises(RuntimeError):
        train(RECIPE, data, options(output), prompts, monitor=KillAt(6, RuntimeError))
    state_path = output / "resume.pt"
    state = torch.load(state_path, weights_only=True)
    for field in ("loss", "init_weights", "precision", "synthesis", "identity"):
        del state["identity"][field]
    torch.save(state, state_path)
    realistic = Recipe(NAMES, MICRO, RECIPE.phases, seed=1, prompt_encoder="random", synthesis="realistic")
    with pytest.raises(TrainingError, match="synthesis: run had 'classic', now 'realistic'"):
        train(realistic, data, options(output, resume=True), prompts)
    mse = Recipe(NAMES, MICRO, RECIPE.phases, seed=1, prompt_encoder="random", loss="mse")
    with pytest.raises(TrainingError, match="loss: run had 'l1', now 'mse'"):
        train(mse, data, options(output, resume=True), prompts)
    with pytest.raises(TrainingError, match="precision: run had 'fp32', now 'bf16'"):
        train(RECIPE, data, options(output, resume=True, precision="bf16"), prompts)
    resumed = train(RECIPE, data, options(output, resume=True, precision="auto"), prompts)  # auto: as saved
    assert resumed.resumed_from == 5 and load_checkpoint(resumed.final).metadata["recipe"]["precision"] == "fp32"


def test_ddp_process_split_gives_the_same_step_as_one_process(data) -> None:
    """The arithmetic DDP relies on: the mean of per-process mean losses' gradients is the global mean's."""
    whole = Trainer(MICRO, prompts().codes, seed=0)
    halves = [Trainer(MICRO, prompts().codes, seed=0) for _ in range(2)]
    dataset = PatchDataset(data.train, NAMES, 32, seed=0, phase=0)
    batch = [dataset[item] for item in next(iter(GlobalBatchSampler(len(dataset), 4, 0, 1, 0, 0, 0, 1)))]
    degraded, clean = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
    tasks = torch.tensor([b[2] for b in batch])
    grads = []
    for half, rows in zip(halves, (slice(0, 2), slice(2, 4)), strict=True):
        loss = (half.model(degraded[rows], half.codes[tasks[rows]]) - clean[rows]).abs().mean()
        loss.backward()
        grads.append([p.grad for p in half.parameters])
    loss = (whole.model(degraded, whole.codes[tasks]) - clean).abs().mean()
    loss.backward()
    for p, g0, g1 in zip(whole.parameters, *grads, strict=True):
        np.testing.assert_allclose(p.grad.numpy(), ((g0 + g1) / 2).numpy(), rtol=1e-4, atol=1e-7)


def test_rng_state_round_trip_restores_python_numpy_and_torch_draws() -> None:
    """A resumed run continues every random stream where the saved one stopped (numpy's legacy tuple state too)."""
    import random

    from dfpir_cli.train.state import rng_state, set_rng_state

    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    state = rng_state()
    first = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(6)
    np.random.seed(6)
    torch.manual_seed(6)
    set_rng_state(state)
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == first


def test_training_a_prompts_own_weights_leaves_the_rest_and_resumes(tmp_path: Path, clean_dir: Path) -> None:
    """--own-weights: only the prompt's own copy of the named modules trains; every checkpoint written is the
    base with them as the prompt's own, and a killed run resumes to the uninterrupted result."""
    from dfpir_cli.model import DFPIR
    from dfpir_cli.train.loop import OwnWeights
    from dfpir_cli.weights.checkpoint import Checkpoint

    torch.manual_seed(3)
    base = Checkpoint(DFPIR(MICRO).eval(), prompts(), {"haze_guide": 256, "tasks": list(NAMES)})
    own_data = build_training_data(("camnoise",), clean_dir=clean_dir, patch_size=40, val_per_task=1, seed=0)
    own = OwnWeights(base, "camnoise", "Camera noise of a real photo", base.prompts.code("noise25"),
                     ("refinement", "output"))
    recipe = Recipe(("camnoise",), MICRO, (Phase(2e-3, 32, 2, steps=6),), seed=1, prompt_encoder="random",
                    own_weights=own.modules)
    straight = train(recipe, own_data, options(tmp_path / "straight"), own.bank, own=own)
    result = load_checkpoint(straight.final)
    assert result.prompts.names == (*NAMES, "camnoise") and result.metadata["haze_guide"] == 256
    assert torch.equal(result.prompts.code("camnoise"), base.prompts.code("noise25"))
    for key, value in base.model.state_dict().items():  # the shared network is the base's
        assert torch.equal(result.model.state_dict()[key], value), key
    mine = result.weights_of("camnoise")
    assert mine is not None and {key.split(".")[0] for key in mine} == {"refinement", "output"}
    assert any(not torch.equal(value, base.model.state_dict()[key]) for key, value in mine.items())

    broken = tmp_path / "broken"
    with pytest.raises(RuntimeError):
        train(recipe, own_data, options(broken), own.bank, own=own, monitor=KillAt(6, RuntimeError))
    resumed = train(recipe, own_data, options(broken, resume=True), own.bank, own=own)
    assert resumed.resumed_from == 5
    again = load_checkpoint(resumed.final).weights_of("camnoise")
    assert again is not None and all(torch.equal(again[key], value) for key, value in mine.items())
