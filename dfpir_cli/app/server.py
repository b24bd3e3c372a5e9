"""Start and stop the app: its workspace, Gradio pointed into it and kept off the network, the server."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from ..errors import DfpirError
from .service import DEFAULT_MAX_MEGAPIXELS, RestoreService, Workspace

INSTALL_HINT = ('dfpir app needs Gradio, an optional extra: pip install "dfpir-cli[app]" (in a checkout of dfpir: '
                'pip install -e ".[app]" -c constraints.txt)')
STOP_TIMEOUT = 10.0  # seconds a stopping app waits for the photo it is restoring


class MissingExtra(DfpirError):
    """An optional dependency is not installed."""


@dataclass
class RunningApp:
    url: str  # where the page is served
    service: RestoreService
    page: object  # the gradio.Blocks serving it

    def close(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop serving, wait up to ``timeout`` seconds for a photo being restored, and remove the workspace
        (uploads, results); whether no restore was left running (if one was, end the process with ``os._exit``:
        finalizing the interpreter under a thread inside torch aborts it)."""
        try:
            self.page.close(verbose=False)  # type: ignore[attr-defined]
            return self.service.stop(timeout)
        finally:
            self.service.workspace.close()


def open_app(weights: str | None = None, device: str = "auto", host: str = "127.0.0.1", port: int | None = None,
             max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, debug: bool = False) -> RunningApp:
    """Load the weights and serve the page on ``host``:``port`` (None: the first free port from 7860, Gradio's
    convention) in a background thread; :meth:`RunningApp.close` stops it."""
    if importlib.util.find_spec("gradio") is None:
        raise MissingExtra(INSTALL_HINT)
    workspace = Workspace()
    try:
        os.environ["GRADIO_TEMP_DIR"] = str(workspace.uploads)  # read when gradio is imported: uploads go here
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry, no version check over the network
        from .page import build_page

        service = RestoreService(workspace, weights, device, max_megapixels)
        page = build_page(service, debug)
        page.queue()
        page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, share=False,
                    inbrowser=False, show_error=debug, footer_links=[])
    except BaseException:
        workspace.close()
        raise
    return RunningApp(str(page.local_url), service, page)
