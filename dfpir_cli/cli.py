"""The `dfpir` command-line application."""

from __future__ import annotations

from typing import Annotated

import typer

from . import __version__
from .commands import detect as detect_command
from .commands import fetch_weights, info, push_weights
from .commands import restore as restore_command
from .commands import train as train_command
from .commands.common import debug_state
from .commands.eval import eval_command
from .commands.train_detector import train_detector_command
from .device import keep_freed_memory

app = typer.Typer(
    name="dfpir",
    help="Restore degraded photos (noise, rain, haze, motion blur, low light) with DFPIR, one all-in-one "
         "network guided by a degradation prompt (Tian et al., CVPR 2025); a small detector names each "
         "photo's degradation when you do not.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dfpir {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """dfpir: all-in-one image restoration."""
    keep_freed_memory()  # tiles and training steps reuse their activations' memory (dfpir_cli.device)
    if debug:
        debug_state["debug"] = True


app.command("info")(info.info)
app.command("fetch-weights")(fetch_weights.fetch_weights)
app.command("push-weights")(push_weights.push_weights)
app.command("restore")(restore_command.restore)
app.command("detect")(detect_command.detect)
app.command("eval")(eval_command)
app.command("train")(train_command.train)
app.command("train-detector")(train_detector_command)


if __name__ == "__main__":  # python -m dfpir_cli.cli
    app()
