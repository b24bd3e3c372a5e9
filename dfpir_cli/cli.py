"""The `dfpir` command-line application."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated

import typer

from . import __version__
from .base.device import keep_freed_memory
from .commands import app as app_command
from .commands import detect as detect_command
from .commands import export as export_command
from .commands import fetch_weights, info, push_weights
from .commands import restore as restore_command
from .commands import train as train_command
from .commands.common import debug_state
from .commands.eval import eval_command
from .commands.train_detector import train_detector_command

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
    keep_freed_memory()  # tiles and training steps reuse their activations' memory (dfpir_cli.base.device)
    if debug:
        debug_state["debug"] = True


def reflow(doc: str | None) -> str:
    """A command's docstring as help: each paragraph one line, so Rich wraps it to the terminal's width.

    Typer's Rich mode keeps single line breaks, which the source needs and a narrow terminal does not (it
    wraps each source line again, leaving ragged half lines). Paragraphs starting with \\b stay as written.
    """
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(paragraph if paragraph.startswith("\b") else
                        " ".join(line.strip() if index else line.rstrip()
                                 for index, line in enumerate(paragraph.split("\n")))
                        for paragraph in paragraphs)


def _command(name: str, function: Callable) -> None:
    app.command(name, help=reflow(function.__doc__))(function)


_command("info", info.info)
_command("fetch-weights", fetch_weights.fetch_weights)
_command("push-weights", push_weights.push_weights)
_command("restore", restore_command.restore)
_command("detect", detect_command.detect)
_command("eval", eval_command)
_command("train", train_command.train)
_command("train-detector", train_detector_command)
_command("app", app_command.app)
_command("export", export_command.export)


if __name__ == "__main__":  # python -m dfpir_cli.cli
    app()
