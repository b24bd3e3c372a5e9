"""dfpir checkpoints: a folder with ``config.json`` and ``model.safetensors``, prompt codes included.

``model.safetensors`` holds the network's weights under ``model.<reference key>`` (the layout of the
reference fixture) and the prompt codes under ``prompts.codes``; ``config.json`` holds the network
config, the prompt names and texts, which encoder made the codes, free metadata (tasks, training), and
the sha256 of ``model.safetensors`` as written, so a corrupt or half-copied file is refused at load (folders
written before that field load unchecked). Every field of ``config.json`` is checked for type and range, and
the weights for NaN/inf, before a network is built. Weights always load with ``strict=True``.

A prompt may carry its own copy of some of the network's tensors (:attr:`Checkpoint.prompt_weights`, stored
as ``prompt_weights.<name>.model.<key>``; format_version 2): a pass with that prompt runs with them in place
of the shared ones (:func:`prompt_weights_applied`), every other prompt with the shared network. The default
model's ``camnoise`` has its own decoder, so that learning a camera's noise costs the paper's prompts nothing.
Checkpoints without such weights are written as format_version 1, readable by older dfpir. Reference
``.pth``/``.pth.tar`` files are imported with ``torch.load(..., weights_only=True)``: a pickle could run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import reprlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from ..base.imageio import share_like_new
from ..errors import CheckpointError, InputError, UnknownDegradationError
from ..model import DFPIR, DFPIRConfig
from .prompts import DEGRADATIONS, resolve_degradation

FORMAT = "dfpir"
FORMAT_VERSION = 2  # 2: prompt_weights (a prompt's own tensors); a checkpoint without them is written as 1
PROMPT_WEIGHTS = "prompt_weights."  # key prefix of a prompt's own tensors in model.safetensors
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_SHA256 = "weights_sha256"  # config.json's record of the sha256 of model.safetensors, checked at load
PROMPT_ENCODERS = ("clip", "random")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class PromptBank:
    """The degradation names a checkpoint knows, their prompt texts and their 512-d codes."""

    names: tuple[str, ...]
    texts: tuple[str, ...]
    codes: torch.Tensor  # (len(names), text_dim) float32
    encoder: str = "clip"  # "clip" (CLIP ViT-B/32 OpenAI) or "random" (seeded codes, no free text)

    def __post_init__(self) -> None:
        self.names, self.texts = tuple(self.names), tuple(self.texts)
        if not self.codes.dtype.is_floating_point:
            raise InputError(f"prompt codes must be floating point, not {self.codes.dtype}")
        self.codes = self.codes.detach().float().cpu()
        if self.codes.ndim != 2 or not (len(self.names) == len(self.texts) == self.codes.shape[0]):
            raise InputError(f"prompt bank needs one text and one code per name: {len(self.names)} names, "
                             f"{len(self.texts)} texts, codes of shape {tuple(self.codes.shape)}")
        if not self.names:
            raise InputError("a prompt bank needs at least one degradation name")
        for kind, items in (("name", self.names), ("text", self.texts)):
            for number, item in enumerate(items, 1):
                if not (isinstance(item, str) and item.strip()):
                    raise InputError(f"prompt {kind} {number} is {reprlib.repr(item)}: prompt names and texts must be "
                                     "non-empty strings")
        repeated = sorted({name for name in self.names if self.names.count(name) > 1})
        if repeated:
            raise InputError(f"prompt names must be unique; repeated: {', '.join(repeated)}")
        if self.encoder not in PROMPT_ENCODERS:
            raise InputError(f"unknown prompt encoder {reprlib.repr(self.encoder)}: dfpir knows {', '.join(PROMPT_ENCODERS)}")
        if not torch.isfinite(self.codes).all():
            raise InputError("prompt codes contain NaN or inf")

    def index(self, name: str) -> int:
        """Row of ``name`` (a name or alias); a clear error lists what this checkpoint knows."""
        try:
            canonical = resolve_degradation(name)
        except UnknownDegradationError:
            canonical = name
        if canonical in self.names:
            return self.names.index(canonical)
        # An alias such as "noisy" also finds the one noise level a checkpoint may have been trained on.
        if canonical in DEGRADATIONS and name.strip().lower() != canonical:
            family = DEGRADATIONS[canonical].family
            # camnoise (a camera's noise) and the Gaussian levels do not stand in for each other
            same_family = [n for n in self.names if n in DEGRADATIONS and DEGRADATIONS[n].family == family
                           and (n == "camnoise") == (canonical == "camnoise")]
            if len(same_family) == 1:
                return self.names.index(same_family[0])
        known = "\n".join(
            f"  {n}: {', '.join(DEGRADATIONS[n].aliases) if n in DEGRADATIONS else '-'}" for n in self.names)
        raise UnknownDegradationError(
            f"this checkpoint does not know the degradation {name!r}. It knows (with aliases):\n{known}")

    def code(self, name: str) -> torch.Tensor:
        """The (text_dim,) code of a degradation name or alias."""
        return self.codes[self.index(name)]

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "texts": list(self.texts), "encoder": self.encoder}


@dataclass
class Checkpoint:
    """A network with the prompt codes it was trained with."""

    model: DFPIR
    prompts: PromptBank
    metadata: dict[str, Any] = field(default_factory=dict)
    # prompt name -> its own float32 CPU tensors for some of the network's keys (the rest shared): see the module
    prompt_weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def config(self) -> DFPIRConfig:
        return self.model.config

    def weights_of(self, name: str | None) -> dict[str, torch.Tensor] | None:
        """The own tensors of the prompt ``name`` (a name or alias) runs with; None: the shared network alone."""
        if name is None or not self.prompt_weights:
            return None
        try:
            return self.prompt_weights.get(self.prompts.names[self.prompts.index(name)])
        except UnknownDegradationError:
            return None

    def state_of(self, name: str | None) -> dict[str, torch.Tensor]:
        """The network's state dict as the prompt ``name`` runs it: the shared tensors, its own in their place."""
        return {**self.model.state_dict(), **(self.weights_of(name) or {})}


@contextmanager
def prompt_weights_applied(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor] | None) -> Iterator[None]:
    """``model`` with ``tensors`` (a prompt's own weights, :attr:`Checkpoint.prompt_weights`) copied into its
    parameters for the block, the shared ones put back after it; nothing happens for None or {}."""
    if not tensors:
        yield
        return
    state = model.state_dict()
    shared = {key: state[key].clone() for key in tensors}
    with torch.no_grad():
        for key, value in tensors.items():
            state[key].copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for key, value in shared.items():
                state[key].copy_(value)


def load_weights_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that lists what is missing, extra or misshapen."""
    check_weights_fit(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def check_weights_fit(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """A :class:`CheckpointError` listing the keys missing, extra or misshapen; shapes only, so ``model`` may
    live on the meta device."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshapen = sorted(f"{key}: checkpoint {tuple(state_dict[key].shape)}, network {tuple(expected[key].shape)}"
                       for key in set(expected) & set(state_dict) if expected[key].shape != state_dict[key].shape)
    if missing or unexpected or misshapen:
        def listing(title: str, items: list[str]) -> str:
            if not items:
                return ""
            more = f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
            return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:20]) + more

        raise CheckpointError(
            f"the weights in {source} do not fit the network "
            f"{listing('missing keys', missing)}{listing('unexpected keys', unexpected)}"
            f"{listing('shape mismatches', misshapen)}\n"
            "Check that the checkpoint was made for this network config (preset), or pass the right config.")


def write_folder_atomic(directory: str | Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) as the folder ``directory``: a temporary sibling folder, then a rename.

    A reader never sees half a checkpoint (new config, old weights); an existing folder is replaced whole.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        share_like_new(staging, directory=True)
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if directory.exists():
            retired = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(retired)
            staging.rename(directory)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (about 0.07 s for the paper model's 124 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_files(config: dict[str, Any], tensors: dict[str, torch.Tensor], format_name: str) -> dict[str, bytes]:
    """``config.json`` and ``model.safetensors`` as bytes for :func:`write_folder_atomic`, the config recording
    the sha256 of the exact weight bytes (:func:`read_weights` checks it)."""
    weights = save_tensors(tensors, metadata={"format": format_name})
    config = {**config, WEIGHTS_SHA256: hashlib.sha256(weights).hexdigest()}
    return {WEIGHTS_NAME: weights, CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode()}


def read_weights(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """The tensors of a ``model.safetensors``: refused when it does not match ``sha256`` (None: not recorded),
    cannot be parsed, or holds anything but finite floating-point numbers.

    The hash streams the file; safetensors then maps the same pages from the OS cache, so the disk is read
    once and no second copy of the weights is held in memory.
    """
    try:
        if sha256 is not None and sha256_of(path) != sha256:
            raise CheckpointError(
                f"{path} does not match the sha256 recorded in {path.parent / CONFIG_NAME} when it was written "
                f"({sha256}): the file is corrupt or half-copied, or was replaced without its {CONFIG_NAME}. "
                "Copy or download the checkpoint folder again.")
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read ({error}); the file is corrupt or truncated: download or "
                              "copy it again") from error
    not_float = [f"{key} ({tensor.dtype})" for key, tensor in tensors.items() if not tensor.dtype.is_floating_point]
    if not_float:
        raise CheckpointError(f"{path} holds tensors that are not floating point: {', '.join(not_float[:5])}. It is "
                              "corrupt or not a dfpir checkpoint.")
    not_finite = [key for key, tensor in tensors.items() if not _all_finite(tensor)]
    if not_finite:
        raise CheckpointError(f"the weights in {path} contain NaN or inf ({', '.join(not_finite[:5])}"
                              f"{', ...' if len(not_finite) > 5 else ''}): the training that wrote them diverged, or "
                              "the file is corrupt. Use another checkpoint (an earlier or best one).")
    return tensors


def _all_finite(tensor: torch.Tensor) -> bool:
    # A sum is NaN or inf when any element is, and one pass that allocates nothing is ~8x faster than
    # isfinite().all() (0.015 s against 0.12 s on the paper model); only a sum that overflows looks closer.
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32))) or bool(torch.isfinite(tensor).all())


def save_checkpoint(directory: str | Path, model: DFPIR, prompts: PromptBank,
                    metadata: dict[str, Any] | None = None, dtype: torch.dtype | None = None,
                    prompt_weights: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> Path:
    """Write a checkpoint folder atomically (:func:`write_folder_atomic`).

    ``dtype=torch.float16`` halves the file (the embedded default model is stored so); loading always
    casts the weights back to the network's float32 parameters. ``prompt_weights``: the prompts' own tensors
    (:attr:`Checkpoint.prompt_weights`), checked as a load checks them.
    """
    state = model.state_dict()
    tensors = {f"model.{key}": value.detach().cpu().to(dtype or value.dtype).contiguous() for key, value in state.items()}
    tensors["prompts.codes"] = prompts.codes.contiguous()
    own = {name: dict(values) for name, values in (prompt_weights or {}).items() if values}
    check_prompt_weights(own, prompts, state, "the prompt weights to save")
    for name, values in own.items():
        for key, value in values.items():
            # a copy: safetensors refuses tensors that share memory (a prompt's own may be the shared one itself)
            copy = value.detach().cpu().to(dtype or value.dtype).clone(memory_format=torch.contiguous_format)
            tensors[f"{PROMPT_WEIGHTS}{name}.model.{key}"] = copy
    config = {"format": FORMAT, "format_version": FORMAT_VERSION if own else 1, "model": model.config.to_dict(),
              "prompts": prompts.to_json(), "metadata": metadata or {}}
    return write_folder_atomic(directory, checkpoint_files(config, tensors, FORMAT))


def is_checkpoint_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint folder (or its ``model.safetensors`` / ``config.json``), every part checked first.

    ``config.json`` field by field, ``model.safetensors`` against the sha256 the config recorded (when it
    did) and for NaN/inf, then the weights against the network the config describes, built on the meta
    device: a config that asks for more than the file holds costs no memory. Loading is ``strict=True``.
    """
    path = Path(path)
    if path.is_file() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not is_checkpoint_dir(path):
        hint = (" It looks like a reference .pth file: import it with "
                "`dfpir fetch-weights --import-official FILE --prompts five-task --output DIR`."
                if path.suffix in (".pth", ".tar", ".pt") else "")
        raise CheckpointError(f"{path} is not a dfpir checkpoint: it needs {CONFIG_NAME} and {WEIGHTS_NAME}.{hint}")
    config_path = path / CONFIG_NAME
    config = read_config(config_path)
    try:
        model_config = DFPIRConfig.from_dict(config["model"])
    except KeyError:
        raise _invalid(config_path, "has no \"model\" (the network config)") from None
    except ValueError as error:
        raise _invalid(config_path, f"has an invalid \"model\": {error}") from error
    tensors = read_weights(path / WEIGHTS_NAME, config.get(WEIGHTS_SHA256))
    prompts = _prompt_bank(config_path, config.get("prompts"), tensors.pop("prompts.codes", None), model_config)
    own = _split_prompt_weights(tensors)
    state_dict = {key.removeprefix("model."): value for key, value in tensors.items()}
    with torch.device("meta"):
        shapes = DFPIR(model_config)
        check_weights_fit(shapes, state_dict, str(path))
        check_prompt_weights(own, prompts, shapes.state_dict(), str(path))
    model = DFPIR(model_config)
    model.load_state_dict(state_dict, strict=True)
    own = {name: {key: value.float() for key, value in values.items()} for name, values in own.items()}
    return Checkpoint(model.to(device).eval(), prompts, config.get("metadata", {}), own)


def _split_prompt_weights(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Take the ``prompt_weights.<name>.model.<key>`` tensors out of ``tensors``: {name: {key: tensor}}."""
    own: dict[str, dict[str, torch.Tensor]] = {}
    for full in [key for key in tensors if key.startswith(PROMPT_WEIGHTS)]:
        name, separator, key = full.removeprefix(PROMPT_WEIGHTS).partition(".model.")
        if not separator:
            raise CheckpointError(f"{full}: a prompt's own tensor must be named {PROMPT_WEIGHTS}<prompt>.model.<key>; "
                                  "the checkpoint is corrupt or was edited by hand")
        own.setdefault(name, {})[key] = tensors.pop(full)
    return own


def check_prompt_weights(own: Mapping[str, Mapping[str, torch.Tensor]], prompts: PromptBank,
                         network: Mapping[str, torch.Tensor], source: str) -> None:
    """A :class:`CheckpointError` unless every prompt of ``own`` is one of ``prompts``' names and each of its
    tensors replaces a tensor of ``network`` (a state dict) of the same shape."""
    for name, values in own.items():
        if name not in prompts.names:
            raise CheckpointError(f"{source} has own weights for the prompt {name!r}, which its prompts "
                                  f"({', '.join(prompts.names)}) lack: the checkpoint is corrupt or was edited by hand")
        unknown = sorted(key for key in values if key not in network)
        misshapen = sorted(f"{key}: {tuple(value.shape)}, network {tuple(network[key].shape)}"
                           for key, value in values.items() if key in network and value.shape != network[key].shape)
        if unknown or misshapen:
            problems = ", ".join((unknown + misshapen)[:5]) + (", ..." if len(unknown) + len(misshapen) > 5 else "")
            raise CheckpointError(f"{source}: the own weights of {name!r} do not fit the network ({problems}); the "
                                  "checkpoint was made for another network config or is corrupt")


def read_config(path: Path) -> dict[str, Any]:
    """A dfpir ``config.json``, its top-level fields checked; the model and prompts are checked by their readers."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path} is not readable JSON ({error}); the checkpoint is corrupt: copy or download "
                              "it again") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dfpir config (no \"format\": \"{FORMAT}\")")
    version = config.get("format_version")
    if type(version) is not int or version < 1:
        raise _invalid(path, f"has {_shown(config, 'format_version')}: it must be a whole number from 1")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was made by a newer dfpir (format_version {version}; this dfpir reads up to "
                              f"{FORMAT_VERSION}): upgrade dfpir (pip install -U dfpir-cli)")
    sha256 = config.get(WEIGHTS_SHA256)
    if WEIGHTS_SHA256 in config and not (isinstance(sha256, str) and _SHA256.match(sha256)):
        raise _invalid(path, f"has {_shown(config, WEIGHTS_SHA256)}: it must be 64 lowercase hexadecimal characters")
    if not isinstance(config.get("metadata", {}), dict):
        raise _invalid(path, f"has {_shown(config, 'metadata')}: it must be a JSON object")
    return config


def _prompt_bank(config_path: Path, entry: Any, codes: torch.Tensor | None, model: DFPIRConfig) -> PromptBank:
    """The prompt bank of ``config.json``'s ``prompts`` and the file's ``prompts.codes``, checked against each other."""
    if not isinstance(entry, dict):
        shown = "no prompts" if entry is None else f"prompts {reprlib.repr(entry)}"
        raise _invalid(config_path, f"has {shown}: it must be an object with names, texts and encoder")
    for key in ("names", "texts"):
        if not isinstance(entry.get(key), list):
            raise _invalid(config_path, f"has {_shown(entry, key, 'prompts.')}: it must be a list of strings")
    if codes is None:
        raise CheckpointError(f"{config_path.parent / WEIGHTS_NAME} has no prompts.codes tensor: it is not a dfpir "
                              "checkpoint's weights file")
    if codes.ndim != 2 or codes.shape[1] != model.text_dim:
        raise _invalid(config_path, f"has model.text_dim {model.text_dim}, but the prompt codes in {WEIGHTS_NAME} are "
                                    f"of shape {tuple(codes.shape)}")
    try:
        return PromptBank(entry["names"], entry["texts"], codes, entry.get("encoder", "clip"))
    except InputError as error:
        raise _invalid(config_path, f"has invalid prompts: {error}") from error


def _shown(entry: dict[str, Any], key: str, prefix: str = "") -> str:
    """``format_version [1]`` or ``no format_version``, for messages."""
    return f"{prefix}{key} {reprlib.repr(entry[key])}" if key in entry else f"no {prefix}{key}"


def _invalid(config_path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{config_path} {problem}. The checkpoint is corrupt or was edited by hand: copy or "
                           "download it again.")


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "net.", "model."):
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


def infer_config(state_dict: dict[str, torch.Tensor]) -> DFPIRConfig:
    """Read the network shape off reference-format weights (dim, blocks, heads, bias, ablation switches)."""
    def count(prefix: str) -> int:
        pattern = re.compile(rf"^{prefix}\.(\d+)\.")
        return len({match.group(1) for key in state_dict if (match := pattern.match(key))})

    def per_level(value: Callable[[str], int]) -> tuple[int, int, int, int]:
        level1, level2, level3, latent = (value(name) for name in ("encoder_level1", "encoder_level2", "encoder_level3",
                                                                    "latent"))
        return level1, level2, level3, latent

    try:
        dim = state_dict["patch_embed.proj.weight"].shape[0]
        in_channels = state_dict["patch_embed.proj.weight"].shape[1]
        heads = per_level(lambda name: state_dict[f"{name}.0.attn.temperature"].shape[0])
        hidden = state_dict["encoder_level1.0.ffn.project_out.weight"].shape[1]
    except KeyError as error:
        raise CheckpointError(f"not a DFPIR/Restormer state dict: key {error} is missing") from error
    factor = 2.66 if int(dim * 2.66) == hidden else hidden / dim
    dgcpm = "encoder_shuffle_channel1.conv1x1.weight" in state_dict
    caapm = "encoder_shuffle_channel1.select_attn.q.weight" in state_dict
    num_blocks = per_level(count)
    return DFPIRConfig(dim=dim, num_blocks=num_blocks, num_refinement_blocks=count("refinement"), heads=heads,
                       ffn_expansion_factor=factor, bias="patch_embed.proj.bias" in state_dict,
                       in_channels=in_channels, out_channels=state_dict["output.weight"].shape[0],
                       channel_perturbation="shuffle" if dgcpm else "none", caapm=caapm)


def read_reference_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a reference ``.pth``/``.pth.tar`` file, loaded safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad pickles
        raise CheckpointError(f"{path} cannot be read as a PyTorch checkpoint ({type(error).__name__}: {error}). "
                              "It may be corrupt, truncated, or contain objects other than tensors.") from error
    if isinstance(payload, dict) and not payload:
        raise CheckpointError(f"{path} is an empty checkpoint ({{}}): the reference training writes these when "
                              "validation did not improve. Use the checkpoint of another epoch.")
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path} holds no state dict (expected {{'state_dict': ...}} or a dict of tensors)")
    if not payload:
        raise CheckpointError(f"{path} has an empty state dict: the reference training writes these when "
                              "validation did not improve. Use the checkpoint of another epoch.")
    return _strip_prefix(payload)


# The authors' published checkpoints carry three scalars per DGPB from an earlier version of the attention
# perturbation, which weighted four attention maps (attn1-attn4); the released network keeps only ``attn4``
# (DESIGN.md section 2), and the reference test script drops the rest silently (strict=False). These twelve,
# and only where they are single numbers, are dropped by name; any other stray key is still an error.
LEGACY_KEYS = frozenset(f"{block}.select_attn.attn{index}"
                        for block in ("encoder_shuffle_channel1", "encoder_shuffle_channel2",
                                      "encoder_shuffle_channel3", "latent_shuffle_channel")
                        for index in (1, 2, 3))


def drop_legacy_keys(state_dict: dict[str, torch.Tensor],
                     expected: set[str]) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """``state_dict`` without the :data:`LEGACY_KEYS` the network does not use, and the keys dropped.

    A legacy key that is not a single number is kept, so the strict check refuses it as unexpected.
    """
    dropped = tuple(sorted(key for key, value in state_dict.items()
                           if key in LEGACY_KEYS and key not in expected and value.numel() == 1 and value.ndim <= 1))
    return {key: value for key, value in state_dict.items() if key not in dropped}, dropped


def import_reference(path: str | Path, prompts: PromptBank, config: DFPIRConfig | None = None,
                     metadata: dict[str, Any] | None = None) -> Checkpoint:
    """Turn a reference checkpoint into a :class:`Checkpoint`, keys checked strictly.

    The reference scripts load with ``strict=False`` and silently keep random weights for keys they do
    not find; here any missing, extra or misshapen key is an error, except the authors' obsolete scalars
    (:data:`LEGACY_KEYS`), which are dropped and named in ``metadata["provenance"]["dropped_keys"]``.
    """
    state_dict = read_reference_state_dict(path)
    config = config or infer_config(state_dict)
    if prompts.codes.shape[1] != config.text_dim:
        raise CheckpointError(f"prompt codes are {prompts.codes.shape[1]}-d but the network expects {config.text_dim}")
    model = DFPIR(config)
    state_dict, dropped = drop_legacy_keys(state_dict, set(model.state_dict()))
    load_weights_strict(model, state_dict, str(path))
    metadata = {"source": Path(path).name, **(metadata or {})}
    if dropped:
        provenance = dict(metadata.get("provenance") or {})
        provenance["dropped_keys"] = list(dropped)
        provenance["dropped_why"] = ("obsolete scalars of an earlier attention variant, unused by the released "
                                     "network (the reference test script drops them too)")
        metadata["provenance"] = provenance
    return Checkpoint(model.eval(), prompts, metadata)
