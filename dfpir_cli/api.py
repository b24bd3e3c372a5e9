"""The Python API: restore numpy arrays, PIL images and files from your own code, as ``dfpir restore`` does.

:class:`DFPIRRestorer` loads a checkpoint once (by the names ``--weights`` takes) and restores any number of
images with it; :func:`restore_image` is the one-call form for one image. Both hand every photo to the CLI's own
restore core: the same :class:`~dfpir_cli.restore.pipeline.Restorer` (precision check, tiling, haze guide,
self-ensemble) runs the same :class:`~dfpir_cli.restore.plan.RestorePlan`, and auto mode asks the same
:func:`~dfpir_cli.restore.pipeline.auto_chooser` (the detector under the checkpoint's AutoPolicy). Files go
through :func:`~dfpir_cli.restore.pipeline.restore_files` itself, so ``restore_file`` writes what
``dfpir restore`` writes.

Same kind in, same kind out: a numpy array comes back with its shape and dtype (uint8, uint16, float on the
0..1 scale; alpha untouched; grey stays grey), a PIL image in its mode (RGB, RGBA, L, LA, I;16, I, F; other
modes come back RGB or RGBA) with its ICC profile and EXIF; a path comes back as a PIL image decoded from the
PNG the CLI would write. Arrays are RGB: flip OpenCV's BGR first (``image[..., ::-1]``). Errors are
:class:`~dfpir_cli.errors.DfpirError` with a message that says what to do.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np
import torch

from .base.device import pick_device
from .base.imageio import FORMATS, LoadedImage, array_like, encode_image, image_from_array, read_image
from .detect import AutoPolicy, Detection, Detector, known_families, parse_chain
from .errors import InputError
from .restore.pipeline import (
    DEFAULT_OVERLAP,
    Choice,
    Chooser,
    InputFile,
    RestoreListener,
    Restorer,
    auto_chooser,
    chain_chooser,
    restore_files,
)
from .restore.plan import RestorePlan
from .weights.checkpoint import Checkpoint
from .weights.resolve import resolve_weights

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["DFPIRRestorer", "restore_image"]

ImageLike = TypeVar("ImageLike", np.ndarray, "PILImage")
# PIL modes that round-trip as arrays: mode -> the mode the restored image comes back in (others: RGB / RGBA)
_PIL_MODES = {"RGB": "RGB", "RGBA": "RGBA", "L": "L", "LA": "LA", "I;16": "I;16", "I": "I", "F": "F"}


def _is_pil(image: object) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(image, Image.Image)


def _pil_to_array(image: PILImage) -> tuple[np.ndarray, str]:
    """The pixels of a PIL image as an array :func:`image_from_array` reads, and the mode to give back."""
    mode = image.mode
    if mode not in _PIL_MODES:
        target = "RGBA" if "A" in mode or "transparency" in image.info else "RGB"
        image, mode = image.convert(target), target
    array = np.asarray(image)
    if mode == "I":  # 32-bit integers: Pillow's mode for 16-bit grey files
        if array.min() < 0 or array.max() > 65535:
            raise InputError(f"the PIL image (mode I) has values from {array.min()} to {array.max()}: dfpir reads "
                             "8- and 16-bit images (0..65535)")
        array = array.astype(np.uint16)
    elif mode == "F":
        array = array.astype(np.float32)
    return array, mode


def _array_to_pil(array: np.ndarray, mode: str, source: PILImage) -> PILImage:
    from PIL import Image

    if mode == "I":
        array = array.astype(np.int32)
    restored = Image.fromarray(array) if mode in ("I;16", "I", "F") else Image.fromarray(array, mode=mode)
    for key in ("icc_profile", "exif", "dpi"):
        if key in source.info:
            restored.info[key] = source.info[key]
    return restored


class DFPIRRestorer:
    """A loaded checkpoint that restores any number of images, as ``dfpir restore`` does.

    >>> import numpy as np
    >>> from dfpir_cli import DFPIRRestorer
    >>> restorer = DFPIRRestorer(device="cpu")  # the embedded default model; or weights="official:five-task"
    >>> photo = np.full((48, 64, 3), 180, np.uint8)
    >>> restorer.restore(photo, "haze").shape
    (48, 64, 3)
    >>> restorer.restore_many([photo, photo[:32]], "noise+haze")[1].dtype
    dtype('uint8')
    """

    def __init__(self, weights: str | Path | None = None, *, device: str = "auto", precision: str = "auto",
                 tile: int | None = None, tile_overlap: int = DEFAULT_OVERLAP, batch_size: int | None = None,
                 self_ensemble: int = 1, haze_guide: int | None = None, detector: str | Path | None = None) -> None:
        """Load ``weights`` once: None (the embedded default model), a checkpoint folder, a Hugging Face repo id
        fetched with ``dfpir fetch-weights``, or ``official:NAME`` (the authors' weights, fetched once). The other
        arguments are ``dfpir restore``'s options of the same names (``--tile``, ``--self-ensemble``...): see
        ``dfpir restore --help``. ``detector`` is a folder from ``dfpir train-detector`` (default: the shipped one),
        loaded the first time auto mode or :meth:`detect` needs it."""
        torch_device = pick_device(device)
        self.checkpoint: Checkpoint = resolve_weights(weights, torch_device)
        self._options: dict[str, Any] = {"precision": precision, "tile": tile, "overlap": tile_overlap,
                                         "batch_size": batch_size, "views": self_ensemble, "haze_guide": haze_guide}
        self._restorer = Restorer(self.checkpoint, None, torch_device, **self._options)
        self._detector_path = detector
        self._detector: Detector | None = None

    def with_options(self, *, self_ensemble: int | None = None, precision: str | None = None) -> DFPIRRestorer:
        """A restorer with another ``self_ensemble`` or ``precision`` (None: this one's) that shares these loaded
        weights and this detector: no second copy of the network in memory (``dfpir app`` switches options per
        click this way)."""
        changes = {"views": self_ensemble, "precision": precision}
        other = copy.copy(self)
        other._options = {**self._options, **{key: value for key, value in changes.items() if value is not None}}
        other._restorer = Restorer(self.checkpoint, None, self.device, **other._options)
        return other

    @property
    def degradations(self) -> tuple[str, ...]:
        """The degradation names these weights restore (aliases such as ``hazy`` or ``dark`` work too)."""
        return self.checkpoint.prompts.names

    @property
    def device(self) -> torch.device:
        return self._restorer.device

    @property
    def precision(self) -> str:
        """The precision restorations run at (``precision="auto"`` resolved: bf16 or fp32)."""
        return self._restorer.precision

    @property
    def detector(self) -> Detector:
        """The degradation detector auto mode and :meth:`detect` use (loaded on first use)."""
        if self._detector is None:
            self._detector = Detector.load(self._detector_path)
        return self._detector

    def _chooser(self, degradation: str | None) -> Chooser:
        """Auto (the CLI's chooser), or the named passes, checked against this checkpoint before any work."""
        if degradation is None or degradation.strip().lower() == "auto":
            return auto_chooser(self.detector, self.checkpoint)
        names = tuple(self.degradations[self.checkpoint.prompts.index(name)] for name in parse_chain(degradation))
        return chain_chooser(names)

    def _load(self, image: object) -> LoadedImage:
        if isinstance(image, (str, Path)):
            return read_image(image)
        if isinstance(image, np.ndarray):
            return image_from_array(image, "the array")
        if _is_pil(image):
            return image_from_array(_pil_to_array(image)[0], "the PIL image")  # type: ignore[arg-type]
        raise InputError(f"cannot restore a {type(image).__name__}: pass a numpy array (H x W x 3 RGB, uint8, "
                         "uint16 or float in 0..1), a PIL image, or the path of an image file")

    def _choose(self, loaded: LoadedImage, degradation: str | None) -> Choice:
        return self._chooser(degradation)(loaded.pixels)

    def plan(self, image: np.ndarray | PILImage | str | Path, degradation: str | None = "auto") -> RestorePlan:
        """What :meth:`restore` would do with ``image`` (passes, tiles, views, precision), without doing it;
        ``print(plan)`` shows it. A clean photo in auto mode has no passes."""
        loaded = self._load(image)
        choice = self._choose(loaded, degradation)
        return self._restorer.plan(loaded.height, loaded.width, choice.names, choice.detection)

    @overload
    def restore(self, image: np.ndarray, degradation: str | None = "auto") -> np.ndarray: ...

    @overload
    def restore(self, image: PILImage | str | Path, degradation: str | None = "auto") -> PILImage: ...

    def restore(self, image: np.ndarray | PILImage | str | Path,
                degradation: str | None = "auto") -> np.ndarray | PILImage:
        """Restore one image and give it back as the same kind (see the module docstring).

        ``degradation``: a name or alias (``"rain"``, ``"hazy"``, ``"noise50"``; :attr:`degradations` lists
        them), a chain run one pass each in the order written (``"noise+haze"``), or ``"auto"`` (the default):
        the detector names it, and a photo it finds clean comes back unchanged (a copy).
        """
        loaded = self._load(image)
        choice = self._choose(loaded, degradation)
        if choice.names:
            plan = self._restorer.plan(loaded.height, loaded.width, choice.names, choice.detection)
            restored = self._restorer.run(plan, loaded.pixels)
        else:
            restored = loaded.pixels
        if isinstance(image, np.ndarray):
            return array_like(restored, loaded, image) if choice.names else image.copy()
        if isinstance(image, (str, Path)):
            from PIL import Image

            # the PNG `dfpir restore -o DIR --ext png` writes, decoded: alpha, grey, 16-bit grey, EXIF and ICC kept
            decoded = Image.open(io.BytesIO(encode_image(restored, loaded, "PNG")))
            decoded.load()
            return decoded
        if not choice.names:
            return image.copy()
        array, mode = _pil_to_array(image)
        return _array_to_pil(array_like(restored, loaded, array), mode, image)

    def restore_many(self, images: Iterable[ImageLike], degradation: str | None = "auto") -> list[ImageLike]:
        """Restore each image with the model loaded once; each comes back as :meth:`restore` gives it."""
        return [self.restore(image, degradation) for image in images]

    def restore_file(self, source: str | Path, target: str | Path, degradation: str | None = "auto",
                     overwrite: bool = True, listener: RestoreListener | None = None) -> Path:
        """Restore the image file ``source`` into ``target`` as ``dfpir restore`` writes it (the format from
        ``target``'s suffix; depth, alpha, grey, EXIF and ICC kept; written atomically; a photo found clean in
        auto mode is copied unchanged). ``target`` may not be ``source``. ``listener`` hears what the CLI's
        progress display hears: the detector's choice, the plan, the forward passes as they finish."""
        source, target = Path(source), Path(target)
        if target.suffix.lower() not in FORMATS:
            raise InputError(f"{target}: name the output with one of the suffixes dfpir writes: "
                             f"{', '.join(sorted(FORMATS))}")
        summary = restore_files([InputFile(source, Path(target.name))], [], self._restorer, target.parent,
                                ext=target.suffix, overwrite=overwrite, listener=listener,
                                chooser=self._chooser(degradation))
        result = summary.results[0]
        if result.status == "failed":
            raise InputError(result.reason)
        if result.status == "skipped":
            raise InputError(f"{target} exists: pass overwrite=True to replace it")
        return Path(result.output or target)

    def detect(self, image: np.ndarray | PILImage | str | Path) -> Detection:
        """What is wrong with ``image``, as ``dfpir detect`` says: per-family probabilities, the noise level,
        and the decision auto mode takes with these weights (``.label``: ``"rain"``, ``"noise25+haze"``,
        ``"clean"``)."""
        loaded = self._load(image)
        names = self.degradations
        return self.detector.detect(loaded.pixels, known_families(names), AutoPolicy.of(self.checkpoint.metadata))


@overload
def restore_image(image: np.ndarray, degradation: str | None = "auto", weights: str | Path | None = None,
            device: str = "auto") -> np.ndarray: ...


@overload
def restore_image(image: PILImage | str | Path, degradation: str | None = "auto", weights: str | Path | None = None,
            device: str = "auto") -> PILImage: ...


def restore_image(image: np.ndarray | PILImage | str | Path, degradation: str | None = "auto",
            weights: str | Path | None = None, device: str = "auto") -> np.ndarray | PILImage:
    """Restore one image in one call: ``DFPIRRestorer(weights, device=device).restore(image, degradation)``.

    It loads the weights on every call: for several images, or to choose tiles, precision or views, make one
    :class:`DFPIRRestorer` and call its :meth:`~DFPIRRestorer.restore` or :meth:`~DFPIRRestorer.restore_many`.
    """
    return DFPIRRestorer(weights, device=device).restore(image, degradation)
