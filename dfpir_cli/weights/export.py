"""The network as an ONNX file, one prompt per file, for ONNX Runtime users (chaiNNer, apps outside Python).

An exported file takes only the image: the prompt's code is baked in as a constant, so the DGCPM's channel
order (a ``topk`` of the DGM's scores, DESIGN.md section 2) and everything else that depends only on the
prompt is folded into constants at export. Height, width and batch are dynamic: the graph reflect-pads each
side up to the network's multiple of 8 and crops back, so any image of at least 8 px a side runs as it is.
The output is clamped to [0, 1], as dfpir's written images are.

The exporter is PyTorch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``): it exports this
network in seconds, with dynamic sizes, while the torch.export-based exporter had not finished a small model
in 10 minutes on the development machine. The model follows its one-band path while exported
(:func:`dfpir_cli.model.restormer.tracing`): no row bands, no size-dependent slices.
"""

from __future__ import annotations

import importlib
import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..base.imageio import write_atomic
from ..errors import ExportDependencyError, InputError
from ..model import DFPIR
from .checkpoint import Checkpoint

ONNX_OPSET = 17  # ONNX Runtime 1.12 and newer run it; LayerNormalization is a single op from opset 17 on
MIN_SIDE = 8  # reflect padding to a multiple of 8 needs at least 8 px a side
INPUT_NAME, OUTPUT_NAME, CODE_NAME = "image", "restored", "text_code"
INSTALL_HINT = "pip install 'dfpir-cli[onnx]' (or: pip install onnx onnxruntime)"


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ExportDependencyError(f"{module} is not installed: {INSTALL_HINT} ({error})") from error


class PromptBaked(nn.Module):
    """``model(image, code)`` with one prompt's code fixed: ``forward(image)`` for any H, W >= 8, output in [0, 1]."""

    code: torch.Tensor

    def __init__(self, model: DFPIR, code: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("code", code.detach().float().reshape(1, -1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        multiple = self.model.multiple_of
        padded = F.pad(image, (0, (multiple - width % multiple) % multiple, 0, (multiple - height % multiple) % multiple),
                       mode="reflect")
        restored = self.model(padded, self.code.expand(image.shape[0], -1))
        return restored[:, :, :height, :width].clamp(0.0, 1.0)


def _float32_copy(checkpoint: Checkpoint, prompt: str | None = None) -> DFPIR:
    """A float32 CPU copy of ``checkpoint``'s network, whatever its device and dtype; ``prompt``: as that prompt
    runs it, with its own weights (:attr:`Checkpoint.prompt_weights`) in place of the shared ones."""
    model = DFPIR(checkpoint.config).eval()
    model.load_state_dict(checkpoint.state_of(prompt))
    return model


def baked(checkpoint: Checkpoint, degradation: str) -> PromptBaked:
    """A float32 CPU copy of ``checkpoint``'s network (whatever its device) with ``degradation``'s code and own
    weights, if it has any, baked in."""
    return PromptBaked(_float32_copy(checkpoint, degradation), checkpoint.prompts.code(degradation)).eval()


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    path: Path
    degradation: str  # the checkpoint's name of the prompt baked in
    prompt_text: str
    opset: int
    size_bytes: int
    seconds: float


def export_onnx(checkpoint: Checkpoint, degradation: str, path: str | Path, opset: int = ONNX_OPSET) -> OnnxExport:
    """Write ``checkpoint``'s network with ``degradation``'s prompt baked in to ``path`` (atomically).

    The file's metadata (``metadata_props``) records the prompt, the opset, the input convention and the
    network config, and the graph passes ``onnx.checker``.
    """
    onnx = _require("onnx")
    wrapper = baked(checkpoint, degradation)
    index = checkpoint.prompts.index(degradation)
    name, text = checkpoint.prompts.names[index], checkpoint.prompts.texts[index]
    started = time.perf_counter()
    graph = _trace(onnx, wrapper, (torch.rand(1, checkpoint.config.in_channels, 64, 72),), [INPUT_NAME], opset)
    graph.producer_name = "dfpir"
    graph.doc_string = (f"DFPIR restoration, prompt {name!r} ({text}) baked in. Input {INPUT_NAME!r}: float32 "
                        f"(N, 3, H, W) RGB in [0, 1], H and W >= {MIN_SIDE}; output {OUTPUT_NAME!r}: same shape, "
                        "in [0, 1].")
    metadata = {"dfpir.degradation": name, "dfpir.prompt_text": text, "dfpir.opset": str(opset),
                "dfpir.input": f"float32 (N, 3, H, W) RGB in [0, 1], H and W >= {MIN_SIDE}, any size",
                "dfpir.config": json.dumps(checkpoint.config.to_dict())}
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    data = graph.SerializeToString()
    try:
        write_atomic(path, data)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from error
    return OnnxExport(Path(path), name, text, opset, len(data), time.perf_counter() - started)


def _trace(onnx: ModuleType, module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str],
           opset: int) -> Any:
    """``module`` traced to an ONNX ModelProto, every input's batch, height and width dynamic (codes: the batch)."""
    sizes = {0: "batch", 2: "height", 3: "width"}
    axes = {name: sizes if tensor.ndim == 4 else {0: "batch"} for name, tensor in zip(input_names, example, strict=True)}
    with tempfile.TemporaryDirectory(prefix="dfpir-export-") as folder, warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about every shape check it records as a constant, and torch about the exporter's age.
        warnings.simplefilter("ignore")
        traced = Path(folder) / "traced.onnx"
        torch.onnx.export(module, example, traced, dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=[OUTPUT_NAME], dynamic_axes={**axes, OUTPUT_NAME: sizes},
                          do_constant_folding=True)
        return onnx.load(str(traced))


def _session(path: str | Path, threads: int | None = None, spinning: bool = True) -> Any:
    onnxruntime = _require("onnxruntime")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:  # idle threads sleep instead of spinning: on cores shared with other work, that work runs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntimeForward:
    """``forward(images, codes)`` of a checkpoint's network run by ONNX Runtime (CPU, fp32): ``dfpir restore
    --backend onnxruntime``. The graph takes the prompt code as an input (one file for every prompt), images
    of sides that are multiples of 8 as the network does. It is exported to ``path`` unless that file exists:
    the caller names it after the weights, so that each set is exported once (about 8 s for the default model).
    ``prompt``: the network as that prompt runs it, with its own weights (a prompt without them: the shared one)."""

    def __init__(self, checkpoint: Checkpoint, path: Path, opset: int = ONNX_OPSET, prompt: str | None = None) -> None:
        onnx = _require("onnx")
        _require("onnxruntime")
        if not path.is_file():
            example = (torch.rand(1, checkpoint.config.in_channels, 64, 72), torch.randn(1, checkpoint.config.text_dim))
            graph = _trace(onnx, _float32_copy(checkpoint, prompt), example, [INPUT_NAME, CODE_NAME], opset)
            write_atomic(path, graph.SerializeToString())
        self.path = path
        self.session = _session(path, spinning=False)

    def __call__(self, images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        feed = {INPUT_NAME: images.detach().float().cpu().contiguous().numpy(),
                CODE_NAME: codes.detach().float().cpu().contiguous().numpy()}
        return torch.from_numpy(self.session.run([OUTPUT_NAME], feed)[0])


def run_onnx(path: str | Path, image: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Run an exported file with ONNX Runtime's CPU provider on ``image`` (N, 3, H, W) float32 in [0, 1]."""
    session = _session(path, threads)
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(image, dtype=np.float32)})[0]


def psnr_against_pytorch(path: str | Path, checkpoint: Checkpoint, degradation: str, image: np.ndarray) -> float:
    """PSNR (dB, data range 1) of the ONNX file's output against the PyTorch network's, fp32, for ``image``."""
    with torch.inference_mode():
        expected = baked(checkpoint, degradation)(torch.from_numpy(image).float()).numpy()
    error = float(np.mean((run_onnx(path, image).astype(np.float64) - expected) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(1 / error)
