"""What the web app does with uploaded photos, without the web: it restores them through the Python API.

A :class:`Workspace` is the app's temporary folder (Gradio's uploads, the results, the previews), removed when the
app stops: nothing is written next to the user's files. A :class:`RestoreService` holds one loaded model at a
time and restores one photo at a time under a lock, so two browsers queue instead of doubling the memory. Each
photo goes through :meth:`~dfpir_cli.api.DFPIRRestorer.restore_file`, that is ``restore_files``, so the file
offered for download is the one ``dfpir restore --suffix _restored`` writes (format, bit depth, alpha, EXIF, ICC).
Nothing here imports Gradio or prints.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
from PIL import Image

from ..api import DFPIRRestorer
from ..base.device import pick_device
from ..base.imageio import quantise, read_image
from ..detect import Detection
from ..errors import DfpirError, InputError
from ..restore.pipeline import Choice, InputFile, RestoreListener, plan_output
from ..weights.official import OFFICIAL, PREFIX, is_cached

DEFAULT_WEIGHTS = "default"  # the embedded default model, as the weights menu names it
AUTO = "auto"
SUFFIX = "_restored"  # results are named as `dfpir restore --suffix _restored` names them
PREVIEW_SIDE = 1600  # the comparison shows 8-bit previews at most this many pixels on their longer side
DEFAULT_MAX_MEGAPIXELS = 50.0  # larger uploads are refused: dfpir restore tiles them without a browser's copies

Progress = Callable[[float, str], None]  # (fraction of the whole request done, what is happening)


KEEP_REQUESTS = 20  # requests whose results (photos and zip) stay downloadable; older ones are deleted


class Workspace:
    """The app's temporary folder: ``uploads/`` (Gradio's cache) and ``results/`` (one folder per request)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dfpir-app-"))
        self.uploads = self.root / "uploads"
        self.results = self.root / "results"
        self.uploads.mkdir()
        self.results.mkdir()
        self._requests = 0
        self._lock = threading.Lock()

    def request_folder(self) -> Path:
        """A new folder for one request's results; the folders of requests older than the last
        :data:`KEEP_REQUESTS` are deleted, so that an app left running does not fill the disk."""
        with self._lock:
            self._requests += 1
            number = self._requests
        folder = self.results / f"{number:04d}"
        folder.mkdir()
        if number > KEEP_REQUESTS:
            shutil.rmtree(self.results / f"{number - KEEP_REQUESTS:04d}", ignore_errors=True)
        return folder

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class Options:
    """What the page asks for; the names are the CLI's (``--degradation``, ``--weights``, ...)."""

    degradation: str = AUTO
    weights: str = DEFAULT_WEIGHTS
    self_ensemble: int = 1
    precision: str = "auto"


@dataclass
class PhotoResult:
    name: str  # the uploaded file's name
    output: Path | None = None  # the restored file, as dfpir restore writes it
    before: Path | None = None  # upright 8-bit previews for the comparison
    after: Path | None = None
    restored_with: str = ""  # "rain", "noise25+haze", or "clean" (auto mode found nothing to do)
    detection: Detection | None = None  # what the detector saw (auto mode)
    error: str = ""  # why the photo was refused or failed
    seconds: float = 0.0
    size: tuple[int, int] = (0, 0)  # width, height

    def describe(self) -> str:
        """One line of Markdown for the page."""
        if self.error:
            return f"**{self.name}**: refused. {self.error}"
        width, height = self.size
        done = ("clean: nothing to restore, left unchanged" if self.restored_with == "clean"
                else f"restored with **{self.restored_with}**")
        return f"**{self.name}** ({width}x{height}): {done} in {self.seconds:.1f} s." + _detection_text(self.detection)


def _detection_text(detection: Detection | None) -> str:
    if detection is None:
        return ""
    ranked = ", ".join(f"{name} {probability:.0%}" for name, probability in detection.ranked()[:3])
    flag = ""
    if detection.withheld:
        flag = f" **Low confidence**: {', '.join(detection.withheld)} likely but withheld (these weights need more)."
    elif detection.low_confidence:
        flag = " **Low confidence**: check the result, or choose the degradation."
    return f" Detected **{detection.label}** with confidence {detection.confidence:.0%} ({ranked}).{flag}"


class _Listener(RestoreListener):
    """Hears the restore core's choice and progress for one photo of a request."""

    def __init__(self, progress: Progress, index: int, count: int, name: str) -> None:
        self.progress, self.index, self.count, self.name = progress, index, count, name
        self.choice: Choice | None = None

    def file_chosen(self, source: Path, choice: Choice) -> None:
        self.choice = choice

    def tiles_done(self, done: int, total: int) -> None:
        self.progress((self.index + done / max(total, 1)) / self.count, f"{self.name}: {done}/{total} tiles")


def _preview(image_path: Path, target: Path) -> tuple[int, int]:
    """Write an upright 8-bit RGB JPEG of ``image_path`` for the browser (which shows neither TIFF nor 16 bits);
    returns the image's own width and height."""
    array = quantise(read_image(image_path).pixels, 8)
    height, width = array.shape[:2]
    scale = PREVIEW_SIDE / max(height, width)
    if scale < 1:
        array = cv2.resize(array, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    Image.fromarray(array).save(target, quality=90)
    return width, height


class RestoreService:
    """One loaded model at a time, one restore at a time: the web app's restore core."""

    def __init__(self, workspace: Workspace, weights: str | None = None, device: str = "auto",
                 max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> None:
        if max_megapixels <= 0:
            raise InputError(f"--max-megapixels {max_megapixels}: use a positive number of megapixels")
        self.workspace = workspace
        self.device = pick_device(device)
        self.given_weights = weights
        self.max_pixels = int(max_megapixels * 1e6)
        self._loaded: tuple[str, DFPIRRestorer] | None = None
        self._lock = threading.Lock()  # held for each load and each restore: one at a time, the others wait
        self._stopping = False

    @property
    def has_gpu(self) -> bool:
        """Whether precision is worth offering (on a CPU, auto picks what the processor can do)."""
        return self.device.type in ("cuda", "mps")

    def weights_choices(self) -> list[str]:
        """The weights on this machine: the default model, cached ``official:`` checkpoints, ``--weights``."""
        choices = [DEFAULT_WEIGHTS] + [PREFIX + name for name in OFFICIAL if is_cached(name)]
        if self.given_weights and self.given_weights not in choices:
            choices.insert(0, self.given_weights)
        return choices

    def restorer(self, weights: str) -> DFPIRRestorer:
        """The restorer for ``weights`` (a menu entry or a checkpoint folder), loading it in place of the last."""
        with self._lock:
            return self._restorer(weights)

    def _restorer(self, weights: str) -> DFPIRRestorer:
        key = weights.strip() or DEFAULT_WEIGHTS
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None  # the old model goes before the new one loads
            restorer = DFPIRRestorer(None if key == DEFAULT_WEIGHTS else key, device=str(self.device))
            restorer.detector  # noqa: B018 - loaded once here, shared by every with_options copy
            self._loaded = (key, restorer)
        return self._loaded[1]

    def stop(self, timeout: float) -> bool:
        """Start no more photos and wait up to ``timeout`` seconds for the one restoring; whether none is left."""
        self._stopping = True
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
            return True
        return False

    def degradations(self, weights: str) -> list[str]:
        return [AUTO, *self.restorer(weights).degradations]

    def restore(self, uploads: list[Path], options: Options, progress: Progress) -> Iterator[PhotoResult]:
        """Restore each upload in turn, yielding its result (refusals included) as soon as it is done."""
        folder = self.workspace.request_folder()
        for index, upload in enumerate(uploads):
            progress(index / len(uploads), f"{upload.name}: waiting for the model")
            listener = _Listener(progress, index, len(uploads), upload.name)
            if self._stopping:
                return
            with self._lock:
                result = self._restore_one(upload, folder / f"{index:03d}", options, listener)
            yield result
        progress(1.0, "done")

    def _restore_one(self, upload: Path, folder: Path, options: Options, listener: _Listener) -> PhotoResult:
        result = PhotoResult(upload.name)
        started = time.perf_counter()
        try:
            self._check_size(upload)
            restorer = self._restorer(options.weights).with_options(
                self_ensemble=options.self_ensemble, precision=options.precision if self.has_gpu else None)
            folder.mkdir()
            target = plan_output(InputFile(upload, Path(upload.name)), folder, SUFFIX)
            restorer.restore_file(upload, target, options.degradation, listener=listener)
            result.seconds = time.perf_counter() - started
            _preview(upload, folder / "before.jpg")
            result.size = _preview(target, folder / "after.jpg")
            result.output, result.before, result.after = target, folder / "before.jpg", folder / "after.jpg"
        except DfpirError as error:  # restore_files turns every failure (out of memory included) into one
            result.error = str(error).replace(str(upload), upload.name)
        choice = listener.choice
        result.restored_with = choice.label if choice is not None else options.degradation
        result.detection = choice.detection if choice is not None else None
        return result

    def _check_size(self, upload: Path) -> None:
        """Refuse a photo with more pixels than ``--max-megapixels`` from its header, before decoding it."""
        try:
            with Image.open(upload) as image:
                width, height = image.size
        except Exception:  # noqa: BLE001 - not an image Pillow knows: read_image says what is wrong
            return
        if width * height > self.max_pixels:
            raise InputError(
                f"{upload.name} is {width}x{height}, {width * height / 1e6:.0f} megapixels: more than this app restores "
                f"({self.max_pixels / 1e6:.0f} MP, `dfpir app --max-megapixels`). Restore it with `dfpir restore`, "
                "which tiles it, or start the app with a larger --max-megapixels if the memory allows.")


def zip_results(results: list[PhotoResult], target: Path | None = None) -> Path | None:
    """The restored files of a request in one zip (stored: images are compressed already); None if there are none.

    ``target`` None: ``restored.zip`` in the request's own folder (:meth:`RestoreService.restore` writes each
    photo into a sub-folder of it), so that the zip goes when the request's results go.
    """
    outputs = [result.output for result in results if result.output is not None]
    if not outputs:
        return None
    target = target or outputs[0].parent.parent / "restored.zip"
    names: set[str] = set()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for output in outputs:
            name, number = output.name, 1
            while name in names:  # two uploads with the same name
                number += 1
                name = f"{output.stem}_{number}{output.suffix}"
            names.add(name)
            archive.write(output, name)
    return target
