"""Reading and writing photos without losing what the restoration does not touch.

Pixels are decoded by OpenCV (``IMREAD_UNCHANGED``: 8- and 16-bit, grey, alpha, in every format listed
here) and the metadata by Pillow (format, EXIF, ICC profile, the pixel count checked before decoding).
The EXIF orientation is applied to the pixels, so the network sees the photo upright, and reset to 1 in
the EXIF written back. Alpha is carried through untouched; grey images come back grey; 16-bit images
come back 16-bit where the format holds it (PNG, TIFF). Outputs are encoded in memory, then written to a
temporary file beside the target and renamed over it: a killed run never leaves a half-written image.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

# Suffix -> the format written for it. Reading accepts these formats whatever the suffix says.
FORMATS: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
                           ".bmp": "BMP", ".webp": "WEBP"}
IMAGE_SUFFIXES: tuple[str, ...] = tuple(FORMATS)
_READABLE = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF", "BMP": "BMP", "WEBP": "WEBP"}
_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
_ALPHA_FORMATS = ("PNG", "TIFF", "WEBP", "BMP")
_GREY_BANDS = {("L",), ("L", "A"), ("I",), ("1",), ("La",), ("P",)}

# Images above this many pixels are refused before decoding: a decompression bomb (a small file that
# claims a huge size) would otherwise exhaust memory. 2x Pillow's warning threshold, about 179 MP.
MAX_PIXELS = 2 * 89_478_485

EXIF_ORIENTATION = 0x0112
# Tags that describe a TIFF file's own pixel layout: Pillow lists them among a TIFF's EXIF, but copied into
# another file they would describe the wrong data (and break the TIFF encoder).
_LAYOUT_TAGS = (254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325,
                338, 339, 340, 341, 530, 532, 34675)
JPEG_QUALITY = 95
# zlib level of 8-bit PNGs. Pillow's default, 6, takes 7.5 s to write a 12 MP photo on one core of this
# project's CPU (a tenth of a whole bf16 restore); 3 writes it in 1.6 s, and on real photos costs 2-8% in size.
PNG_COMPRESS_LEVEL = 3


@dataclass
class LoadedImage:
    """An upright photo ready for the network, with everything needed to write it back alike."""

    pixels: torch.Tensor  # (3, H, W) float32 in [0, 1], RGB (grey images repeated on three channels)
    alpha: np.ndarray | None  # (H, W) alpha at the file's own bit depth, carried through untouched
    grey: bool  # written back as a single-channel image
    bit_depth: int  # 8 or 16, or 32 for float TIFFs (0..1 scale), written back as float TIFF
    format: str  # PNG, JPEG, TIFF, BMP or WEBP: what the file holds, not what its suffix says
    exif: bytes | None  # EXIF block ("Exif\0\0..."), orientation reset to 1
    icc_profile: bytes | None

    @property
    def height(self) -> int:
        return self.pixels.shape[-2]

    @property
    def width(self) -> int:
        return self.pixels.shape[-1]

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W[, C]) array, as Pillow's ``exif_transpose`` does."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return np.rot90(array, k=2).swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def _metadata(data: bytes, path: Path, max_pixels: int) -> tuple[str, bool, int, bytes | None, bytes | None]:
    """Format, greyness, orientation, EXIF and ICC from the header, checking the size before any decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise InputError(f"{path}: refused, it claims more than {max_pixels / 1e6:.0f} megapixels "
                         f"(a decompression bomb, or a far larger image than a photo) ({error})") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if data[:4] in (b"II*\0", b"MM\0*"):  # a TIFF Pillow cannot open, e.g. 32-bit float RGB
            return _tiff_metadata(data, path, max_pixels)
        raise InputError(f"{path} is not an image dfpir can read (PNG, JPEG, TIFF, BMP or WebP): "
                         "it is another kind of file, or corrupt") from error
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise InputError(f"{path}: refused, {width}x{height} is {width * height / 1e6:.0f} megapixels, more than "
                             f"the {max_pixels / 1e6:.0f} MP limit (a decompression bomb, or not a photo)")
        fmt = _READABLE.get(image.format or "")
        if fmt is None:
            raise InputError(f"{path} is a {image.format} image; dfpir reads PNG, JPEG, TIFF, BMP and WebP")
        grey = image.getbands() in _GREY_BANDS and image.mode != "P"
        if image.mode == "P":  # a palette of grey entries only is still a grey image
            palette = image.getpalette() or []
            grey = all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
        exif_block, orientation = None, 1
        try:
            exif = image.getexif()
        except Exception:  # noqa: BLE001 - malformed EXIF must not cost the photo
            exif = None
        if exif:
            orientation = int(exif.get(EXIF_ORIENTATION, 1) or 1)
            if EXIF_ORIENTATION in exif:
                exif[EXIF_ORIENTATION] = 1
            for tag in _LAYOUT_TAGS:
                exif.pop(tag, None)
            try:
                exif_block = exif.tobytes()
            except Exception:  # noqa: BLE001 - keep the pixels even if the EXIF cannot be re-encoded
                exif_block = None
        # A CMYK JPEG decodes to RGB: its CMYK profile would then describe the wrong colours.
        icc = (image.info.get("icc_profile") or None) if image.mode != "CMYK" else None
    return fmt, grey, orientation, exif_block, icc


def _tiff_metadata(data: bytes, path: Path, max_pixels: int) -> tuple[str, bool, int, bytes | None, bytes | None]:
    """The header of a TIFF that Pillow cannot open (float samples, for one), read with tifffile."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            page = tiff.pages.first
            shape, samples = page.shape, page.samplesperpixel
            icc_tag = page.tags.get(34675)
            icc = bytes(icc_tag.value) if icc_tag is not None else None
    except Exception as error:  # noqa: BLE001 - tifffile raises many types for bad files
        raise InputError(f"{path} is not an image dfpir can read (PNG, JPEG, TIFF, BMP or WebP): it is another kind "
                         "of file, or a corrupt TIFF") from error
    height, width = shape[0], shape[1]
    if height * width > max_pixels:
        raise InputError(f"{path}: refused, {width}x{height} is {width * height / 1e6:.0f} megapixels, more than "
                         f"the {max_pixels / 1e6:.0f} MP limit (a decompression bomb, or not a photo)")
    return "TIFF", samples in (1, 2), 1, None, icc


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode ``path`` into an upright RGB float tensor plus the alpha, depth and metadata to write it back."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise InputError(f"{path} does not exist") from error
    except IsADirectoryError as error:
        raise InputError(f"{path} is a folder, not an image") from error
    except OSError as error:
        raise InputError(f"{path} cannot be read ({error.strerror or error})") from error
    if not data:
        raise InputError(f"{path} is empty (0 bytes)")
    fmt, grey, orientation, exif, icc = _metadata(data, path, max_pixels)
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise InputError(f"{path} is corrupt or truncated: its {fmt} data cannot be decoded")
    if array.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif array.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    elif array.dtype == np.float32:
        bit_depth, scale = 32, 1.0
    else:
        raise InputError(f"{path} has {array.dtype} samples; dfpir reads 8-bit, 16-bit and float32 images")
    if fmt != "TIFF":  # OpenCV's TIFF decoder applies the (baseline TIFF) orientation tag itself
        array = _orient(array, orientation)
    alpha = None
    if array.ndim == 3 and array.shape[2] == 4:
        alpha = np.ascontiguousarray(array[:, :, 3])
        array = array[:, :, :3]
    elif array.ndim == 3 and array.shape[2] == 2:  # grey + alpha, as some decoders return it
        alpha = np.ascontiguousarray(array[:, :, 1])
        array = array[:, :, 0]
    if array.ndim == 3:
        array = array[:, :, 0] if grey else array[:, :, ::-1]  # decoders expand grey to equal BGR channels
    if array.ndim == 2:
        grey = True
        pixels = torch.from_numpy(np.ascontiguousarray(array)).float().expand(3, -1, -1).contiguous()
    else:
        pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous().float()
    if scale != 1.0:
        pixels.div_(scale)
    return LoadedImage(pixels.clamp_(0, 1), alpha, grey, bit_depth, fmt, exif, icc)


def output_format(path: str | Path, fallback: str = "PNG") -> str:
    return FORMATS.get(Path(path).suffix.lower(), fallback)


def image_from_array(array: np.ndarray, what: str = "the image") -> LoadedImage:
    """An in-memory RGB image as :func:`read_image` gives a file: (H, W) grey, (H, W, 1), (H, W, 2) grey + alpha,
    (H, W, 3) RGB or (H, W, 4) RGBA; uint8, uint16, or float on the 0..1 scale. Alpha is kept untouched."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise InputError(f"{what} has shape {array.shape}: pass H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA), "
                         "channels last (a (3, H, W) array: np.moveaxis(array, 0, -1))")
    if min(array.shape[:2]) < 1:
        raise InputError(f"{what} is empty ({array.shape[1]}x{array.shape[0]} pixels)")
    if array.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif array.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    elif array.dtype in (np.float16, np.float32, np.float64):
        bit_depth, scale = 32, 1.0
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(f"{what} holds NaN or infinite values")
        if array.min() < -1e-3 or array.max() > 1 + 1e-3:
            raise InputError(f"{what} is float with values from {array.min():g} to {array.max():g}: float images are "
                             "read on the 0..1 scale (divide by 255, or pass the uint8 array itself)")
    else:
        raise InputError(f"{what} has {array.dtype} samples: pass uint8, uint16, or float on the 0..1 scale")
    alpha = None
    if array.ndim == 3 and array.shape[2] in (2, 4):
        alpha = np.ascontiguousarray(array[:, :, -1])
        array = array[:, :, :-1]
        if array.shape[2] == 1:
            array = array[:, :, 0]
    grey = array.ndim == 2
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    pixels = tensor.expand(3, -1, -1).contiguous() if grey else tensor.permute(2, 0, 1).contiguous()
    if scale != 1.0:
        pixels.div_(scale)
    return LoadedImage(pixels.clamp_(0, 1), alpha, grey, bit_depth, "PNG", None, None)


def array_like(restored: torch.Tensor, source: LoadedImage, like: np.ndarray) -> np.ndarray:
    """A restored (3, H, W) image as an array of ``like``'s shape and dtype (the inverse of
    :func:`image_from_array`): integers rounded as the files :func:`encode_image` writes, floats unrounded,
    grey as luma, alpha from the source untouched."""
    pixels = to_luma(restored) if source.grey else restored
    if source.bit_depth == 32:
        array = pixels.detach().float().cpu().clamp(0, 1).numpy().transpose(1, 2, 0)
    else:
        array = quantise(pixels, source.bit_depth)
    array = array.astype(like.dtype, copy=False)
    if source.alpha is not None:
        array = np.concatenate([array, source.alpha[:, :, None].astype(like.dtype, copy=False)], axis=2)
    return np.ascontiguousarray(array.reshape(like.shape))


def quantise(pixels: torch.Tensor, depth: int) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) integers of ``depth`` bits, rounded."""
    top = 65535.0 if depth == 16 else 255.0
    dtype = np.uint16 if depth == 16 else np.uint8
    scaled = pixels.detach().float().cpu().clamp(0, 1).mul_(top).round_()
    return scaled.numpy().astype(dtype).transpose(1, 2, 0)


def to_luma(pixels: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma, as Pillow converts RGB to grey."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=pixels.device)
    return (pixels.float() * weights[:, None, None]).sum(0, keepdim=True)


def fit_alpha(alpha: np.ndarray, depth: int) -> np.ndarray:
    if alpha.dtype == np.float32:
        top = 65535.0 if depth == 16 else 255.0
        return np.clip(np.round(alpha * top), 0, top).astype(np.uint16 if depth == 16 else np.uint8)
    if depth == 16 and alpha.dtype == np.uint8:
        return alpha.astype(np.uint16) * 257
    if depth == 8 and alpha.dtype == np.uint16:
        return ((alpha.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return alpha


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _add_png_metadata(png: bytes, exif: bytes | None, icc: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks after IHDR (OpenCV writes 16-bit PNGs but not their metadata)."""
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        chunks += _png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00"))
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return png[:ihdr_end] + chunks + png[ihdr_end:]


def _float_tiff(pixels: torch.Tensor, source: LoadedImage) -> bytes:
    """A float TIFF stays float: 32-bit samples on the 0..1 scale, as it was read."""
    import tifffile

    array = pixels.detach().float().cpu().clamp(0, 1).numpy().transpose(1, 2, 0)
    if source.alpha is not None:
        alpha = source.alpha.astype(np.float32)
        array = np.concatenate([array, alpha[:, :, None]], axis=2)
    channels = array.shape[2]
    buffer = io.BytesIO()
    extratags = [(34675, "B", len(source.icc_profile), source.icc_profile, True)] if source.icc_profile else []
    tifffile.imwrite(buffer, np.ascontiguousarray(array[:, :, 0] if channels == 1 else array),
                     photometric="minisblack" if channels in (1, 2) else "rgb",
                     extrasamples=("unassalpha",) if channels in (2, 4) else None,
                     compression="zlib", extratags=extratags)
    return buffer.getvalue()


def encode_image(restored: torch.Tensor, source: LoadedImage, fmt: str) -> bytes:
    """Encode a restored (3, H, W) image in ``fmt`` with the source's alpha, greyness, depth and metadata."""
    if source.alpha is not None and fmt not in _ALPHA_FORMATS:
        raise InputError(f"the image has an alpha channel, which {fmt} cannot hold: write PNG, TIFF, WebP or BMP "
                         "(--ext png) to keep it")
    pixels = to_luma(restored) if source.grey else restored
    if source.bit_depth == 32 and fmt == "TIFF":
        return _float_tiff(pixels, source)
    depth = 16 if source.bit_depth > 8 and fmt in _SIXTEEN_BIT_FORMATS else 8
    array = quantise(pixels, depth)  # (H, W, 1 or 3)
    if source.alpha is not None:
        array = np.concatenate([array, fit_alpha(source.alpha, depth)[:, :, None]], axis=2)
    channels = array.shape[2]
    if depth == 16:
        if fmt == "TIFF":
            import tifffile

            buffer = io.BytesIO()
            extratags = [(34675, "B", len(source.icc_profile), source.icc_profile, True)] if source.icc_profile else []
            tifffile.imwrite(buffer, array[:, :, 0] if channels == 1 else array,
                             photometric="minisblack" if channels in (1, 2) else "rgb",
                             extrasamples=("unassalpha",) if channels in (2, 4) else None,
                             compression="zlib", extratags=extratags)
            return buffer.getvalue()
        bgr = array if channels <= 2 else array[:, :, [2, 1, 0, 3][:channels]]
        if channels == 2:  # OpenCV has no grey+alpha: write it as RGBA with equal colour channels
            bgr = np.concatenate([array[:, :, :1]] * 3 + [array[:, :, 1:]], axis=2)
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
        if not ok:
            raise InputError("OpenCV could not encode the 16-bit PNG")
        return _add_png_metadata(encoded.tobytes(), source.exif, source.icc_profile)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    if mode == "LA" and fmt in ("WEBP", "BMP"):
        array, mode = np.concatenate([array[:, :, :1]] * 3 + [array[:, :, 1:]], axis=2), "RGBA"
    image = Image.fromarray(array[:, :, 0] if channels == 1 else np.ascontiguousarray(array), mode=mode)
    options: dict[str, object] = {}
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        if source.exif:
            options["exif"] = source.exif
        if source.icc_profile:
            options["icc_profile"] = source.icc_profile
    if fmt == "PNG":
        options.update(compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "JPEG":
        options.update(quality=JPEG_QUALITY, subsampling=0)
    elif fmt == "WEBP":
        options.update(quality=JPEG_QUALITY)
    elif fmt == "TIFF":
        options.update(compression="tiff_deflate")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@functools.cache
def _umask() -> int:
    mask = os.umask(0)  # the only way to read it: set it and put it back, once per process
    os.umask(mask)
    return mask


def new_file_mode(directory: bool = False) -> int:
    """The mode ``open`` or ``mkdir`` gives a new file or folder: 0o666 or 0o777 less the umask.

    Temporary files (``mkstemp``: 0o600, ``mkdtemp``: 0o700) get it before the rename, so an output that is
    written atomically can be read by whoever could read one written directly.
    """
    return (0o777 if directory else 0o666) & ~_umask()


def share_like_new(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` :func:`new_file_mode`; where the file system has no modes to set, leave it as it is."""
    try:
        os.chmod(path, new_file_mode(directory))
    except OSError:
        pass


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            share_like_new(temporary)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_image(path: str | Path, restored: torch.Tensor, source: LoadedImage) -> None:
    """Encode ``restored`` in the format of ``path``'s suffix and write it atomically."""
    write_atomic(path, encode_image(restored, source, output_format(path, source.format)))
