"""`dfpir app`: restore photos in the browser, served from this machine (Gradio)."""

from __future__ import annotations

import os
import signal
import threading
from typing import Annotated

import typer

from ..app.server import open_app
from ..app.service import DEFAULT_MAX_MEGAPIXELS
from .common import DeviceOpt, WeightsOpt, console, debug_state, handle_errors


def app(
    host: Annotated[str, typer.Option(
        "--host", help="Address to serve on. The default, 127.0.0.1, is this machine only; 0.0.0.0 opens the app to "
                       "your network (anyone who can reach this machine can then use it).")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(
        "--port", min=1, max=65535, show_default=False,
        help="Port to serve on. Default: the first free one from 7860 (Gradio's convention).")] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    max_megapixels: Annotated[float, typer.Option(
        "--max-megapixels", min=0.01,
        help="Refuse uploads larger than this (each photo's working copies take about 100 bytes a pixel; "
             "`dfpir restore` tiles larger ones).")] = DEFAULT_MAX_MEGAPIXELS,
) -> None:
    """Start a local web app: drop photos, choose the degradation or leave it on auto, compare before and after,
    download the results.

    The page runs the restore core `dfpir restore` runs, one photo at a time (other browsers queue), and its
    downloads are the files `dfpir restore --suffix _restored` writes. Uploads and results live in a temporary
    folder, removed when the app stops; nothing is written next to your files. The weights menu offers the
    default model, the `official:` checkpoints fetched with `dfpir fetch-weights`, --weights, or a folder you
    type. Needs the app extra: pip install "dfpir-cli\\[app]". Stop it with Ctrl+C.
    """
    stop = threading.Event()
    with handle_errors():
        running = open_app(weights, device, host, port, max_megapixels, debug_state["debug"])
    previous = signal.signal(signal.SIGTERM, lambda _signal, _frame: stop.set())
    console.print(f"dfpir app: open [bold]{running.url}[/] in your browser (Ctrl+C stops it)", highlight=False)
    try:
        while not stop.wait(0.5):  # a short wait, so that Ctrl+C (SIGINT) is seen at once
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        console.print("dfpir app: stopping", highlight=False)
        if not running.close():
            console.print("dfpir app: stopped in the middle of a restore", highlight=False)
            console.file.flush()
            os._exit(0)
