"""What every command shares: console, error handling, and the options several commands take."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import DfpirError

console = Console()
err_console = Console(stderr=True)

# Set by the app's --debug flag (or DFPIR_DEBUG=1): show tracebacks instead of one-line errors.
debug_state = {"debug": os.environ.get("DFPIR_DEBUG", "") not in ("", "0")}

USAGE_ERROR = 2


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn library errors into a clear message and exit code; tracebacks only with --debug."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except DfpirError as error:
        if debug_state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(USAGE_ERROR) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except Exception as error:  # noqa: BLE001 - the edge of the program
        if debug_state["debug"]:
            raise
        err_console.print(f"[bold red]internal error:[/] {type(error).__name__}: {error}\n"
                          "Run again with `dfpir --debug ...` for the traceback, and please report it.",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def announce_bf16_check() -> None:
    """Said before ``--precision auto`` measures bf16 against fp32 for new weights (seconds to a minute)."""
    err_console.print("[dim]--precision auto: checking once for these weights that bf16 restores the benchmark "
                      "photos like fp32 (within 45 dB); the result is cached[/]", highlight=False)


def is_interactive() -> bool:
    return sys.stderr.isatty()


# Options shared by several commands.
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="auto, bf16, fp16 or fp32. auto: bf16 autocast where the hardware has native bf16 (CPUs with "
                        "AVX512-BF16 or AMX, CUDA GPUs from Ampere on) and these weights' bf16 restorations of the "
                        "benchmark photos stay within 45 dB PSNR of fp32 (checked once per checkpoint and device, "
                        "cached in $DFPIR_CACHE_DIR, default ~/.cache/dfpir); fp32 otherwise. bf16/fp16/fp32 force "
                        "one (fp16 needs a GPU). A tile whose output is not finite (fp16 overflows easily) is re-run "
                        "in bf16, or in fp32 where the GPU has no native bf16 or bf16 gave it; the summary counts "
                        "them.")]
WeightsOpt = Annotated[str | None, typer.Option(
    "--weights", "-w", help="Checkpoint folder (config.json + model.safetensors), a reference .pth file, "
                            "a Hugging Face repo id fetched with `dfpir fetch-weights`, or official:five-task | "
                            "official:three-task | official:three-task-simple (the authors' weights, after "
                            "`dfpir fetch-weights official:NAME`).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; errors and the summary only.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
OutputDirOpt = Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
_HAZE_GUIDE_HELP = ("Haze passes take their tone (airlight, haze depth) from the restoration of a thumbnail this "
                    "many pixels on its longer side, and their detail from the full size: the default model dehazes "
                    "a whole photo less than a small one (the two SOTS pairs: 24.46 dB whole, 27.09 guided by 256 "
                    "px). 0: off, as the paper restored (a photo larger than the haze tile still takes its tone from a "
                    "thumbnail as large as that tile, as low light does; --tile 0 runs every photo whole). Photos no "
                    "larger than the thumbnail run as they are.")
HazeGuideOpt = Annotated[int | None, typer.Option(
    "--haze-guide", min=0, show_default=False,
    help=_HAZE_GUIDE_HELP + " Default: the checkpoint's own (256 for the embedded default model, whose metadata "
                            "asks for it; off for others, the paper's weights included).")]
EvalHazeGuideOpt = Annotated[int, typer.Option(
    "--haze-guide", min=0, help=_HAZE_GUIDE_HELP + " Default: off, the paper's protocol.")]
SelfEnsembleOpt = Annotated[int, typer.Option(
    "--self-ensemble", help="Restore each image in this many views and average them, each view undone: 1 (off), "
                            "2 (and its mirror image), 4 (and both upside down) or 8 (and transposed; passes with "
                            "the rain prompt stop at 4, as transposed streaks lie sideways, but a free-text --prompt "
                            "gets all 8). Costs one restoration per view; for the default model 4 is the best value "
                            "on the real test splits (docs/default-model.md, \"Self-ensemble\").")]
