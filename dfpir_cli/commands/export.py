"""`dfpir export`: the network with one prompt baked in, as an ONNX file for ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ..base.imageio import read_image
from ..data.photos import float_pixels, shipped_photos
from ..errors import InputError
from ..weights.export import MIN_SIDE, ONNX_OPSET, psnr_against_pytorch
from ..weights.export import export_onnx as export_file
from ..weights.resolve import resolve_weights
from .common import JsonOpt, console, handle_errors

FORMATS = ("onnx",)
VERIFY_SIDE = 256  # the shipped photos are cropped to this, and to an odd size, for --verify


def _verification_images() -> list[np.ndarray]:
    """Two shipped photos at two sizes (one not a multiple of 8), as (1, 3, H, W) float32 in [0, 1]."""
    images = []
    for path, (height, width) in zip(shipped_photos()[:2], ((VERIFY_SIDE, VERIFY_SIDE), (VERIFY_SIDE - 27, 197)),
                                     strict=True):
        pixels = float_pixels(read_image(path))[:height, :width]
        images.append(np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32))
    return images


def export(
    weights: Annotated[str | None, typer.Argument(
        metavar="[CHECKPOINT]", help="Checkpoint folder, Hugging Face repo id fetched with `dfpir fetch-weights`, or "
                                     "official:NAME (default: the shipped default model).", show_default=False)] = None,
    degradation: Annotated[str, typer.Option(
        "--degradation", "-d", help="The prompt to bake in: noise15, noise25, noise50, rain, haze, blur, lowlight or an "
                                    "alias (hazy, dark, ...); one file per prompt.", show_default=False)] = "",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File to write (default: dfpir-NAME.onnx in the current folder); written through a "
                               "temporary file, so a failed export leaves no half file.", show_default=False)] = None,
    format_name: Annotated[str, typer.Option("--format", "-f", help="Export format: onnx.")] = "onnx",
    opset: Annotated[int, typer.Option("--opset", min=14, help="ONNX opset of the graph.")] = ONNX_OPSET,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Run the file with ONNX Runtime on two shipped photos (two sizes) and print its PSNR against "
                         "PyTorch's fp32 output (needs onnxruntime).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export the network for ONNX Runtime (chaiNNer, apps outside Python), one file per prompt.

    The prompt's code is baked in: the file takes only the image. Input [bold]image[/]: float32 (N, 3, H, W), RGB in
    [0, 1], any H and W of at least 8 px (the graph pads to the network's multiple of 8 and crops back); output
    [bold]restored[/]: the same shape, clamped to [0, 1]. The file's metadata records the prompt, the opset and the
    network config. Large photos: run the file on tiles, as dfpir restore does.

    Needs the onnx package: pip install 'dfpir-cli\\[onnx]' (onnxruntime too, for --verify).

    Examples:

      dfpir export -d hazy -o dehaze.onnx   (the default model)

      dfpir export ckpt/ -d noise25 -o denoise.onnx --verify

    """
    with handle_errors():
        if format_name.strip().lower() not in FORMATS:
            raise InputError(f"--format {format_name}: dfpir exports {', '.join(FORMATS)}")
        if not degradation.strip():
            raise InputError("--degradation NAME is required: each exported file holds one prompt")
        checkpoint = resolve_weights(weights, "cpu")
        name = checkpoint.prompts.names[checkpoint.prompts.index(degradation)]
        target = output if output is not None else Path(f"dfpir-{name}.onnx")
        if target.is_dir():
            raise InputError(f"--output {target} is a folder: name the .onnx file to write")
        result = export_file(checkpoint, degradation, target, opset)
        checks = [psnr_against_pytorch(result.path, checkpoint, degradation, image)
                  for image in _verification_images()] if verify else []
        summary = {"path": str(result.path), "format": "onnx", "degradation": result.degradation,
                   "prompt_text": result.prompt_text, "opset": result.opset, "bytes": result.size_bytes,
                   "seconds": round(result.seconds, 2), "input": f"image: float32 (N, 3, H, W) RGB in [0, 1], H, W >= "
                   f"{MIN_SIDE}", "output": "restored: same shape, in [0, 1]",
                   "verify_psnr_db": [round(value, 2) for value in checks]}
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        console.print(f"wrote [bold]{result.path}[/] (ONNX opset {result.opset}, {result.size_bytes / 2**20:.1f} MiB, "
                      f"{result.seconds:.1f} s): prompt {result.degradation!r} ({result.prompt_text}) baked in",
                      highlight=False)
        console.print(f"input {summary['input']}; output {summary['output']}", highlight=False)
        if checks:
            console.print("ONNX Runtime vs PyTorch fp32 on two shipped photos: "
                          + ", ".join(f"{value:.1f} dB" for value in checks), highlight=False)
