"""Shared test fixtures: the reference fixtures, the real test splits, and a tiny checkpoint saved on disk."""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest
import torch

from dfpir_cli.model import DFPIR, DFPIRConfig
from dfpir_cli.weights.checkpoint import PromptBank, save_checkpoint
from dfpir_cli.weights.prompts import DEGRADATIONS, FIVE_TASK, random_codes

# dfpir's cache and datasets folder: an empty temporary folder, never the user's (tests that need a set put it there).
_HOME = Path(tempfile.mkdtemp(prefix="dfpir-tests-"))
os.environ["DFPIR_CACHE"] = str(_HOME / "cache")
os.environ["DFPIR_DATA"] = str(_HOME / "data")
atexit.register(shutil.rmtree, _HOME, True)

# The networks in tests are tiny: one thread is faster than two fighting over a busy 2-core machine.
torch.set_num_threads(1)

# The reference fixtures ship with the tests, so a fresh clone runs the conformance tests with nothing beside it.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The real test splits are large and live beside the repository; $DFPIR_REALSETS points elsewhere.
REALSETS = Path(__file__).resolve().parents[2] / "shared" / "realsets"

# Smaller than the "tiny" preset (whose DGM linears alone are 1 M parameters): fast end-to-end tests.
MICRO = DFPIRConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, text_dim=16)


@pytest.fixture(scope="session", autouse=True)
def _precision_cache(tmp_path_factory: pytest.TempPathFactory):
    """`--precision auto` caches its bf16 checks: in a folder of this session (CLI subprocesses inherit it)."""
    import os

    from dfpir_cli.restore.precision_check import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("dfpir-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures: the reference model and key list (part of the repository)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES}: they are part of the repository; restore tests/fixtures")
    return FIXTURES


def find_realsets() -> Path:
    """$DFPIR_REALSETS, else ../shared/realsets beside the repo; absent: skip with the reason, or fail under CI=true."""
    override = os.environ.get("DFPIR_REALSETS")
    path = Path(override).expanduser() if override else REALSETS
    if not path.is_dir():
        skip_unless_ci(f"real test splits not found at {path} (set DFPIR_REALSETS to their folder)")
    return path


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it under CI=true: CI never passes by silently skipping."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this is an error, not a skip")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def realsets_dir() -> Path:
    """The real test splits (CBSD68, Rain100L, LOL, SOTS in the layouts ``dfpir eval`` reads).

    Absent, the tests that need them skip with the reason shown in the summary; under CI=true they fail instead,
    so CI never passes by silently skipping them.
    """
    return find_realsets()


@pytest.fixture(scope="session")
def reference_tiny(fixtures_dir: Path) -> tuple[DFPIRConfig, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    config = DFPIRConfig.from_dict(json.loads((fixtures_dir / "dfpir_reference_tiny.json").read_text())["config"])
    return config, load_file(fixtures_dir / "dfpir_reference_tiny.safetensors")


def make_prompts(text_dim: int = 512, names: tuple[str, ...] = FIVE_TASK, seed: int = 0) -> PromptBank:
    return PromptBank(names, tuple(DEGRADATIONS[n].text for n in names), random_codes(names, seed, text_dim), "random")


def make_checkpoint(directory: Path, config: DFPIRConfig = MICRO, seed: int = 0) -> Path:
    """A checkpoint folder with a randomly initialised (seeded) network and random prompt codes."""
    torch.manual_seed(seed)
    model = DFPIR(config).eval()
    return save_checkpoint(directory, model, make_prompts(config.text_dim), {"tasks": list(FIVE_TASK)})


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny, fast checkpoint folder (random weights, random prompt codes) for end-to-end tests."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "micro")


def reference_checkpoint_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """The fixture's ``model.*`` weights saved the way the reference training saves them (a .pth.tar)."""
    state = {f"module.{key.removeprefix('model.')}": value for key, value in tensors.items() if key.startswith("model.")}
    buffer = io.BytesIO()
    torch.save({"epoch": 80, "state_dict": state}, buffer)
    return buffer.getvalue()


# The names under which the authors publish their checkpoints (the reference training names files by their scores).
PUBLISHED_FIVE_TASK = ("DFPIR-5D-pn31.29-0.8889_pr37.62-0.9779_ph31.64-0.9794_pb28.82-0.8734_pl23.82-0.8428_"
                       "avr30.64-0.9125.pth.tar")
PUBLISHED_THREE_TASK_SIMPLE = ("DFPIR-3D-SP_p_n34.12-0.9348_31.45-0.8911_28.18-0.8009_p_r38.63-0.9821_"
                               "p_h31.93-0.9805avr32.86-0.9179.pt")


def published_checkpoint_bytes(config: DFPIRConfig, tensors: dict[str, torch.Tensor],
                               extra: dict[str, torch.Tensor] | None = None) -> bytes:
    """A file laid out as the authors' published 5-task checkpoint, around the fixture's ``model.*`` weights.

    ``{'epoch', 'state_dict', 'optimizer', 'scheduler'}`` as train_5D_DFPIR.py saves them: the weights plus the
    twelve obsolete ``select_attn.attn1-3`` scalars of an earlier attention variant, and real Adam and
    CosineAnnealingLR state (a step taken on the network, with the weights saved as they were before it).
    ``extra`` adds keys to the state dict (stray keys, for refusal tests).
    """
    from dfpir_cli.weights.checkpoint import LEGACY_KEYS

    state = {key.removeprefix("model."): value.clone() for key, value in tensors.items() if key.startswith("model.")}
    network = DFPIR(config)
    network.load_state_dict(state, strict=False)  # a test may leave a weight out
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=150)
    generator = torch.Generator().manual_seed(0)
    for parameter in network.parameters():
        parameter.grad = torch.randn(parameter.shape, generator=generator)
    optimizer.step()
    scheduler.step()
    state.update({key: torch.tensor([0.2]) for key in sorted(LEGACY_KEYS)})
    state.update(extra or {})
    buffer = io.BytesIO()
    torch.save({"epoch": 120, "state_dict": state, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def random_clip():
    """A randomly initialised open_clip ViT-B-32 text tower (the OpenAI weights need the network)."""
    import open_clip

    from dfpir_cli.weights.prompts import ClipTextEncoder

    torch.manual_seed(0)
    return ClipTextEncoder(open_clip.create_model("ViT-B-32", pretrained=None))


@pytest.fixture
def clip_loads(monkeypatch, random_clip) -> list:
    """ClipTextEncoder.load returns the random encoder; the list records the weights each call asked for."""
    from dfpir_cli.weights.prompts import ClipTextEncoder

    calls: list = []

    def load(weights=None, device="cpu"):
        calls.append(weights)
        return random_clip

    monkeypatch.setattr(ClipTextEncoder, "load", staticmethod(load))
    return calls
