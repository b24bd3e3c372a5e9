"""The page: Gradio components wired to the :class:`~dfpir_cli.app.service.RestoreService`.

Gradio reads ``GRADIO_TEMP_DIR`` when it is imported, so import this module through :func:`dfpir_cli.app.server.open_app`,
which points it into the app's workspace first.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import DfpirError
from .service import AUTO, Options, PhotoResult, RestoreService, zip_results

INTRO = ("# dfpir: restore photos\n"
         "Drop one or several photos (PNG, JPEG, TIFF, BMP, WebP), choose the degradation or leave it on **auto** "
         "(the detector names it per photo), and restore. Everything runs on this machine; the uploads and results "
         "live in a temporary folder that is removed when `dfpir app` stops. The downloads are the files "
         "`dfpir restore` writes: same format, bit depth, alpha and metadata.")


def _summary(run: int, results: list[PhotoResult], count: int) -> str:
    restored = sum(not result.error for result in results)
    refused = len(results) - restored
    text = f"Run {run}: {restored} of {count} photos restored" + (f", {refused} refused (see below)" if refused else "")
    return text + ("." if len(results) == count else f"; restoring photo {len(results) + 1}...")


CACHE_CLEANUP = (600, 7200)  # Gradio's delete_cache: (how often, how old), in seconds


def build_page(service: RestoreService, debug: bool = False) -> gr.Blocks:
    """The app's page; ``debug`` shows unexpected errors' tracebacks on the console (``dfpir --debug app``)."""
    weights = service.weights_choices()
    # Gradio's cache (uploads, and the copies of the files it serves): every 10 minutes, what is older than 2 hours
    with gr.Blocks(title="dfpir", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as page:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Photos", file_count="multiple", elem_id="photos")
                degradation = gr.Dropdown(service.degradations(weights[0]), value=AUTO, label="Degradation",
                                          info="auto: detected per photo; a chain such as noise+haze runs both",
                                          allow_custom_value=True, elem_id="degradation")
                views = gr.Radio([1, 2, 4, 8], value=1, label="Self-ensemble", elem_id="self-ensemble",
                                 info="restore in this many mirrored and rotated views and average them (slower)")
                precision = gr.Dropdown(["auto", "bf16", "fp16", "fp32"], value="auto", label="Precision",
                                        visible=service.has_gpu, elem_id="precision")
                chosen_weights = gr.Dropdown(weights, value=weights[0], label="Weights", allow_custom_value=True,
                                             elem_id="weights", info="the default model, the official: checkpoints "
                                             "fetched with dfpir fetch-weights, or type a checkpoint folder")
                button = gr.Button("Restore", variant="primary", elem_id="restore")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                download_all = gr.DownloadButton("Download all (zip)", visible=False, elem_id="download-all", size="md")
                results = gr.State([])
                runs = gr.State(0)  # this browser's restores, numbered in the status line

                @gr.render(inputs=results)
                def show(shown: list[PhotoResult]) -> None:
                    for index, result in enumerate(shown):
                        gr.Markdown(result.describe(), elem_id=f"result-{index}", elem_classes="result")
                        if result.output is not None:
                            gr.ImageSlider((str(result.before), str(result.after)), type="filepath", interactive=False,
                                           label=f"{result.name}: before / after", elem_id=f"compare-{index}")
                            gr.DownloadButton(f"Download {result.output.name}", value=str(result.output),
                                              elem_id=f"download-{index}", size="sm")

        def change_weights(name: str) -> Any:
            try:
                return gr.update(choices=service.degradations(name), value=AUTO)
            except DfpirError as error:
                raise gr.Error(str(error)) from None

        def restore(uploads: list[str] | None, named: str, ensemble: int, chosen_precision: str, name: str, run: int,
                    progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008 - Gradio's way to ask for progress
            if not uploads:
                raise gr.Error("Drop one or more photos first (PNG, JPEG, TIFF, BMP or WebP).")
            options = Options(named or AUTO, name, int(ensemble), chosen_precision)
            done: list[PhotoResult] = []
            run += 1
            yield done, _summary(run, done, len(uploads)), gr.update(visible=False), run
            try:
                for result in service.restore([Path(upload) for upload in uploads], options,
                                              lambda fraction, what: progress(fraction, desc=what)):
                    done.append(result)
                    yield done, _summary(run, done, len(uploads)), gr.update(visible=False), run
            except DfpirError as error:  # the weights could not load: the page says why, the app goes on
                raise gr.Error(str(error)) from None
            except Exception as error:  # noqa: BLE001 - the edge of the app: it keeps serving
                if debug:
                    traceback.print_exc()
                raise gr.Error(f"internal error: {type(error).__name__}: {error}. Start the app with "
                               "`dfpir --debug app` for the traceback, and please report it.") from None
            archive = zip_results(done)
            yield done, _summary(run, done, len(uploads)), gr.update(value=str(archive) if archive else None,
                                                                     visible=archive is not None), run

        chosen_weights.change(change_weights, chosen_weights, degradation, concurrency_id="model",
                              concurrency_limit=1)
        button.click(restore, [files, degradation, views, precision, chosen_weights, runs],
                     [results, status, download_all, runs], concurrency_id="model", concurrency_limit=1)
    return page
