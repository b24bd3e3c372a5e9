"""Seeded synthetic degradations: clean photo in, degraded photo out, for every DFPIR degradation.

``dfpir eval --dataset synthetic`` uses these to benchmark without a download, and ``dfpir train`` may use
them to make training pairs from clean photos. Every function is pure numpy (plus OpenCV filtering) on
float32 ``H x W x 3`` images in [0, 1], and every random choice comes from the ``numpy.random.Generator``
passed in, so one seed gives one image, on any machine.

The models of each degradation, with the ranges their parameters are drawn from:

- ``noise15`` / ``noise25`` / ``noise50``: additive white Gaussian noise of standard deviation
  sigma/255 (sigma 15, 25, 50), clipped to [0, 1]. This is the degradation of the paper's denoising
  task (DESIGN.md section 5); :func:`add_gaussian_noise_uint8` is its exact 8-bit test protocol.
- ``rain``: rain streaks, as in the synthetic Rain100L/Rain800 style. Sparse random seed points
  (density 0.2-0.8% of pixels) are smeared by a line kernel (length 9-31 px, angle within 25 degrees of
  vertical, one angle per image as wind gives), softened by a small Gaussian, and the streak layer (peak
  brightness 0.5-0.9) is added to the photo.
- ``haze``: the atmospheric scattering model ``I = J t + A (1 - t)``, ``t = exp(-beta d)`` (Koschmieder's
  law, as used to make RESIDE), with a smooth depth map ``d`` in [0, 1] (a vertical ramp, far at the
  top, plus a low-frequency random field), ``beta`` 0.6-1.6 and a bright, near-grey airlight ``A``
  0.75-1.0 per channel (channels within 0.05 of each other).
- ``blur``: motion blur by a random camera-shake kernel: a random walk with inertia (the trajectory
  model of Boracchi and Foi, simplified) of 5-15 px rasterised into a kernel with its centre of mass at
  the kernel's centre (blur smears, it does not shift the photo), normalised to sum 1 and convolved with the
  photo (reflected border), as GoPro-style blur averages frames along a path.
- ``lowlight``: an under-exposed capture: ``scale * J ** gamma`` (gamma 1.5-3.0, scale 0.15-0.5)
  plus signal-dependent shot noise and Gaussian read noise (sigma 0.005-0.02), clipped to [0, 1]: the
  dark, noisy look of LOL's low-light photos.

These ``classic`` models define the built-in benchmark (``dfpir eval --dataset synthetic``) and stay fixed so
that its figures compare across versions. Training uses the ``realistic`` models by default
(``dfpir train --synthesis``), matched to the real test splits rather than to a look:

- ``rain``: streaks with Rain100L's statistics, measured on its 100 test pairs (rain layer = input - target):
  streak pixels cover 10-25% of a photo; one direction per photo, 9 degrees from vertical in the median photo
  and 21-28 degrees in a quarter of them (structure tensor); along that direction the layer's autocorrelation
  falls to half at 11-18 px (quartiles: streaks about 25-45 px long), across it 0.57-0.67 at 1 px and
  0.15-0.28 at 2 px (about 2 px wide). The model: seed density 0.05-0.4%, length 16-46 px, an angle of
  ``30 u^1.5`` degrees either way (``u`` uniform: 11 in the median photo, beyond 20 in a quarter), softened
  by a Gaussian of sigma 0.55-0.9, a brightness of 0.35-0.9, and blended either additively or as a screen
  (``1 - (1 - J)(1 - R)``, which brightens dark areas more than bright ones, as light scattered by a drop
  does); measured the same way it gives 10.5-16 px, 0.58-0.72, 0.15-0.29 and 9-19% cover. Earlier versions
  drew streaks half as long and half as wide (8-27 px, sigma 0.3-0.6) and, before that, only within 15
  degrees of vertical.
- ``haze``: depth from a ramp tilted up to 20 degrees plus a smooth random field, ``beta`` 0.3-1.6 (thin
  to thick), airlight 0.7-0.95 with a tint of up to 0.06 per channel (blue-grey or warm, as real skies).
- ``lowlight``: a camera's capture: the photo linearised (sRGB gamma 2.2), exposed at 0.4-12% (log-uniform),
  a white-balance error of up to 20% per channel, Poisson-like shot noise and Gaussian read noise in linear
  light, a tone curve of gamma 1.8-2.6, and 8-bit quantisation.
- ``noise15``: a camera's noise (:func:`camera_noise`, below), so that the lightest noise prompt also removes
  the noise of real photos (PolyU: about sigma 4, correlated); ``noise25``/``noise50`` and blur are the same as
  the classic models.
- ``camnoise`` (dfpir's own prompt for real camera noise, not the paper's): always :func:`camera_noise`, in
  every model.

Photos as cameras record them (issue 32), for the detector, which must recognise real photos rather than
benchmark inputs:

- :func:`camera_noise`: shot and read noise (variance ``a x + b``, ``a`` 4e-4 to 1.5e-2 log-uniform, ``b`` 0.05-1%
  of ``a``) on an RGGB mosaic of the photo in linear light, bilinear demosaicing, the camera's noise reduction
  (a Gaussian of sigma 0.25-0.7 on the noise, 5-40% of its colour noise turned into brightness noise), a 2.2
  tone curve and a JPEG at quality 70-95. Measured on the 45 PolyU pairs of ``../shared/realphotos`` (noise =
  one shot - the mean of many; 10th/50th/90th percentiles over photos): noise sigma 2.9/3.9/5.2 (8-bit),
  correlation between colour channels 0.55/0.68/0.82, between neighbours 0.56/0.72/0.80 at 1 px and
  0.27/0.40/0.58 at 2 px, the same sigma in shadows and highlights; the model applied to PolyU's means gives
  1.6/3.9/7.0 (a wider range: phones are noisier), 0.63/0.75/0.85, 0.63/0.69/0.79 and 0.25/0.36/0.52.
- :func:`photographed_rain`: one to three streak layers in one wind direction, from near (long: up to 16% of
  the photo's side, wide and out of focus, sparse) to far (short, thin, up to 0.8% seed density), screen
  blended; in 70% of photos the veil of heavy rain (5-40% of a grey airlight, unevenly); in half of them
  splashes, small bright drops most of them low in the frame.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import InputError, UnknownDegradationError
from ..weights.prompts import DEGRADATIONS, resolve_degradation

NOISE_SIGMAS: dict[str, int] = {"noise15": 15, "noise25": 25, "noise50": 50}
# The noise level each noise prompt is for, which auto mode matches to the detector's estimate: camnoise's is about
# the 8-bit sigma of a camera's noise (PolyU's pairs: 2.9/3.9/5.2, see camera_noise).
NOISE_LEVELS: dict[str, int] = {**NOISE_SIGMAS, "camnoise": 5}
SYNTHESIS_MODELS = ("classic", "realistic", "mixed")  # the benchmark's; matched to real sets; either, a coin per image


def _check_image(clean: np.ndarray) -> np.ndarray:
    if clean.ndim != 3 or clean.shape[2] != 3:
        raise InputError(f"expected an H x W x 3 image, got an array of shape {clean.shape}")
    return np.clip(np.asarray(clean, dtype=np.float32), 0.0, 1.0)


def gaussian_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise of standard deviation ``sigma`` (on the 0-255 scale) and clip to [0, 1]."""
    clean = _check_image(clean)
    noise = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(clean + noise, 0.0, 1.0)


def _line_kernel(length: int, angle_degrees: float) -> np.ndarray:
    """A normalised, anti-aliased line of ``length`` pixels through the centre of an odd square kernel."""
    size = length if length % 2 else length + 1
    kernel: np.ndarray = np.zeros((size * 4, size * 4), dtype=np.float32)  # drawn at 4x, then area-averaged down
    centre = (size * 4 - 1) / 2
    dx, dy = math.sin(math.radians(angle_degrees)), math.cos(math.radians(angle_degrees))
    half = (length * 4 - 1) / 2
    start = (round(centre - dx * half), round(centre - dy * half))
    end = (round(centre + dx * half), round(centre + dy * half))
    cv2.line(kernel, start, end, 1.0, thickness=2, lineType=cv2.LINE_AA)
    kernel = cv2.resize(kernel, (size, size), interpolation=cv2.INTER_AREA)
    return kernel / max(float(kernel.sum()), 1e-8)


def rain_streaks(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add bright, slanted rain streaks (see the module docstring for the model and its ranges)."""
    clean = _check_image(clean)
    height, width = clean.shape[:2]
    density = rng.uniform(0.002, 0.008)
    length = int(rng.integers(9, 32))
    length = max(3, min(length, max(height, width) // 2))
    angle = rng.uniform(-25.0, 25.0)
    brightness = rng.uniform(0.5, 0.9)
    seeds = (rng.random((height, width)) < density).astype(np.float32)
    seeds *= rng.uniform(0.6, 1.0, size=(height, width)).astype(np.float32)  # streaks differ in strength
    streaks: np.ndarray = cv2.filter2D(seeds, -1, _line_kernel(length, angle), borderType=cv2.BORDER_REFLECT)
    streaks = cv2.GaussianBlur(streaks, (3, 3), 0.6)
    peak = float(streaks.max())
    if peak > 0:
        streaks = streaks / peak * np.float32(brightness)
    return np.clip(clean + streaks[..., None], 0.0, 1.0)


def _smooth_field(height: int, width: int, rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """A smooth random field in [0, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    field -= field.min()
    return field / max(float(field.max()), 1e-8)


def haze(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Haze by the atmospheric scattering model with a smooth synthetic depth map (module docstring)."""
    clean = _check_image(clean)
    height, width = clean.shape[:2]
    ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None] * np.ones((1, width), dtype=np.float32)
    mix = rng.uniform(0.3, 0.7)
    depth = (1.0 - mix) * ramp + mix * _smooth_field(height, width, rng)
    depth = 0.1 + 0.9 * depth  # nothing touches the camera
    beta = rng.uniform(0.6, 1.6)
    transmission = np.exp(-beta * depth).astype(np.float32)[..., None]
    base = rng.uniform(0.8, 0.95)
    airlight = np.clip(base + rng.uniform(-0.05, 0.05, size=3), 0.75, 1.0).astype(np.float32)
    return np.clip(clean * transmission + airlight * (1.0 - transmission), 0.0, 1.0)


def motion_kernel(rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """A random camera-shake kernel: a random walk with inertia, rasterised and normalised to sum 1.

    The path spans ``size - 2`` px (``size`` odd, 7-17 when not given). Its mean, the kernel's centre of
    mass, lies at the centre of the returned kernel, which is therefore ``size`` px square or a little
    larger for a lopsided path: blurring smears the photo without also translating it, so the sharp target
    is the photo at the blur's centre, not one shifted in a direction no method can know (deblurring
    benchmarks align results for the same reason).
    """
    size = int(rng.integers(7, 18)) if size is None else size
    size = size if size % 2 else size + 1
    steps = 64
    heading = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(0.6, 1.0)
    turn = rng.uniform(0.0, 0.35)  # how much the path wanders
    points = [np.zeros(2)]
    for _ in range(steps - 1):
        heading += rng.normal(0.0, turn)
        points.append(points[-1] + speed * np.array([math.cos(heading), math.sin(heading)]))
    path = np.array(points)
    path -= (path.max(axis=0) + path.min(axis=0)) / 2
    path *= (size / 2 - 1) / max(float(np.abs(path).max()), 1e-8)  # the path's extent: size - 2 px
    path -= path.mean(axis=0)  # centre of mass at the kernel's centre
    size = max(size, 2 * math.ceil(float(np.abs(path).max())) + 3)  # odd, with a pixel to spare each side
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = (size - 1) / 2
    for x, y in path:  # bilinear splat of each trajectory point
        px, py = x + centre, y + centre
        x0, y0 = int(math.floor(px)), int(math.floor(py))
        fx, fy = px - x0, py - y0
        for ox, oy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                               (1, 1, fx * fy)):
            kernel[y0 + oy, x0 + ox] += weight
    return kernel / float(kernel.sum())


def motion_blur(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a random motion-blur kernel (reflected border), as a shaking camera would."""
    clean = _check_image(clean)
    size = min(int(rng.integers(7, 18)), max(3, min(clean.shape[:2]) // 2))
    kernel = motion_kernel(rng, size)
    return np.clip(cv2.filter2D(clean, -1, kernel, borderType=cv2.BORDER_REFLECT), 0.0, 1.0)


def low_light(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Under-expose: ``scale * J ** gamma`` plus shot and read noise (module docstring)."""
    clean = _check_image(clean)
    gamma = rng.uniform(1.5, 3.0)
    scale = rng.uniform(0.15, 0.5)
    dark = scale * np.power(clean, gamma, dtype=np.float32)
    read_sigma = rng.uniform(0.005, 0.02)
    shot = np.sqrt(np.maximum(dark, 0.0)) * np.float32(rng.uniform(0.01, 0.03))
    noise = rng.standard_normal(clean.shape, dtype=np.float32) * (shot + np.float32(read_sigma))
    return np.clip(dark + noise, 0.0, 1.0).astype(np.float32)


def realistic_rain(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thin rain streaks with Rain100L's statistics, added or screen-blended (module docstring)."""
    clean = _check_image(clean)
    height, width = clean.shape[:2]
    length = max(3, min(int(rng.integers(16, 47)), max(height, width) // 2))
    angle = float(rng.choice((-1.0, 1.0))) * 30.0 * rng.random() ** 1.5  # mostly near vertical, as Rain100L's
    seeds = (rng.random((height, width)) < rng.uniform(0.0005, 0.004)).astype(np.float32)
    seeds *= rng.uniform(0.5, 1.0, size=(height, width)).astype(np.float32)
    if not seeds.any():  # a small patch at a low density can draw no streak: a rainy image has at least one
        seeds[int(rng.integers(height)), int(rng.integers(width))] = np.float32(rng.uniform(0.5, 1.0))
    streaks: np.ndarray = cv2.filter2D(seeds, -1, _line_kernel(length, angle), borderType=cv2.BORDER_REFLECT)
    streaks = cv2.GaussianBlur(streaks, (0, 0), rng.uniform(0.55, 0.9))
    peak = float(streaks.max())
    if peak > 0:
        streaks = streaks / peak * np.float32(rng.uniform(0.35, 0.9))
    layer = streaks[..., None]
    if rng.random() < 0.5:
        return np.clip(clean + layer, 0.0, 1.0)
    return np.clip(1.0 - (1.0 - clean) * (1.0 - layer), 0.0, 1.0)


def realistic_haze(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Haze over a tilted depth ramp plus a smooth field, with a tinted airlight (module docstring)."""
    clean = _check_image(clean)
    height, width = clean.shape[:2]
    tilt = math.radians(rng.uniform(-20.0, 20.0))
    rows = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
    columns = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :] * (width / max(height, 1))
    ramp = rows * math.cos(tilt) + columns * math.sin(tilt)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-8)
    mix = rng.uniform(0.2, 0.6)
    depth = 0.1 + 0.9 * ((1.0 - mix) * ramp + mix * _smooth_field(height, width, rng))
    transmission = np.exp(-rng.uniform(0.3, 1.6) * depth).astype(np.float32)[..., None]
    airlight = np.clip(rng.uniform(0.7, 0.95) + rng.uniform(-0.06, 0.06, size=3), 0.6, 1.0).astype(np.float32)
    return np.clip(clean * transmission + airlight * (1.0 - transmission), 0.0, 1.0)


def camera_low_light(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark capture as a camera records it: exposure, white balance, noise, tone curve, 8 bits (docstring)."""
    clean = _check_image(clean)
    linear = np.power(clean, 2.2, dtype=np.float32)
    exposure = math.exp(rng.uniform(math.log(0.004), math.log(0.12)))
    gains = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    signal = linear * np.float32(exposure) * gains
    shot = np.sqrt(np.maximum(signal, 0.0)) * np.float32(rng.uniform(0.005, 0.02))
    read = np.float32(rng.uniform(0.0002, 0.002))
    captured = np.clip(signal + rng.standard_normal(clean.shape, dtype=np.float32) * (shot + read), 0.0, 1.0)
    toned = np.power(captured, 1.0 / rng.uniform(1.8, 2.6), dtype=np.float32)
    return (np.round(toned * 255.0) / 255.0).astype(np.float32)


def _mosaic(linear: np.ndarray) -> np.ndarray:
    """The RGGB Bayer mosaic a sensor records of a linear H x W x 3 image: one colour per pixel."""
    mosaic = np.empty(linear.shape[:2], dtype=np.float32)
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2]
    return mosaic


def _demosaic(mosaic: np.ndarray) -> np.ndarray:
    """OpenCV's bilinear demosaicing of an RGGB mosaic in [0, 1] (16-bit inside), as float32 RGB."""
    raw = np.clip(mosaic * 65535.0, 0, 65535).astype(np.uint16)
    return cv2.cvtColor(raw, cv2.COLOR_BayerBG2RGB).astype(np.float32) / 65535.0


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` (float32 H x W x 3 in [0, 1]) through an 8-bit JPEG at ``quality``, decoded again."""
    bgr = (np.clip(image, 0.0, 1.0)[..., ::-1] * 255.0).round().astype(np.uint8)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:  # pragma: no cover - OpenCV encodes any 8-bit 3-channel image
        return np.clip(image, 0.0, 1.0).astype(np.float32)
    return decoded[..., ::-1].astype(np.float32) / 255.0


def camera_noise(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise as a camera records it: shot and read noise on the sensor's mosaic in linear light, demosaicing,
    the camera's noise reduction, its tone curve and a JPEG (module docstring: matched to PolyU's real pairs)."""
    clean = _check_image(clean)
    linear = np.power(clean, 2.2, dtype=np.float32)
    mosaic = _mosaic(linear)
    shot = math.exp(rng.uniform(math.log(4e-4), math.log(1.5e-2)))  # variance per unit of linear signal
    read = shot * rng.uniform(0.0005, 0.01)
    noisy = mosaic + rng.standard_normal(mosaic.shape, dtype=np.float32) * np.sqrt(mosaic * np.float32(shot) + read)
    # demosaicing spreads each pixel's noise over its neighbours and channels; the camera then smooths it, the
    # colour noise more than the brightness noise
    residual = cv2.GaussianBlur(_demosaic(noisy) - _demosaic(mosaic), (0, 0), rng.uniform(0.25, 0.7))
    mix = np.float32(rng.uniform(0.05, 0.4))
    residual = (1.0 - mix) * residual + mix * residual.mean(axis=2, keepdims=True)
    toned = np.power(np.clip(linear + residual, 0.0, 1.0), 1.0 / 2.2, dtype=np.float32)
    return jpeg(toned, int(rng.integers(70, 96)))


def photographed_rain(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rain as a camera photographs it: streak layers from near (long, wide, out of focus, sparse) to far
    (short, thin, dense) in one wind direction, the veil of heavy rain, and splashes on the ground (module
    docstring)."""
    clean = _check_image(clean)
    height, width = clean.shape[:2]
    side = max(height, width)
    angle = float(rng.choice((-1.0, 1.0))) * 30.0 * rng.random() ** 1.5
    rain = np.zeros((height, width), dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        far = rng.random()  # 0: near the camera, 1: far
        length = max(3, min(round(side * rng.uniform(0.02, 0.12) * (1.3 - far)), side // 2))
        seeds = (rng.random((height, width)) < 0.0004 + 0.008 * far * rng.random()).astype(np.float32)
        seeds *= rng.uniform(0.5, 1.0, size=(height, width)).astype(np.float32)
        layer: np.ndarray = cv2.filter2D(seeds, -1, _line_kernel(length, angle + rng.normal(0.0, 3.0)),
                                         borderType=cv2.BORDER_REFLECT)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.5 + 2.0 * (1.0 - far) * rng.random())
        peak = float(layer.max())
        if peak > 0:
            rain = 1.0 - (1.0 - rain) * (1.0 - layer / peak * np.float32(rng.uniform(0.2, 0.7)))
    image = clean
    if rng.random() < 0.7:  # heavy rain veils the scene as a thin fog does
        veil = np.float32(rng.uniform(0.05, 0.4)) * (0.6 + 0.4 * _smooth_field(height, width, rng))[..., None]
        airlight = np.clip(rng.uniform(0.6, 0.9) + rng.uniform(-0.03, 0.03, size=3), 0.0, 1.0).astype(np.float32)
        image = (image * (1.0 - veil) + airlight * veil).astype(np.float32)
    if rng.random() < 0.5:  # splashes: small bright drops, most of them low in the frame, on the ground
        drops = (rng.random((height, width)) < rng.uniform(0.001, 0.006)).astype(np.float32)
        drops *= np.linspace(0.2, 1.0, height, dtype=np.float32)[:, None] ** 2
        drops = cv2.GaussianBlur(drops, (0, 0), rng.uniform(0.6, 1.2)).astype(np.float32)
        peak = float(drops.max())
        if peak > 0:
            rain = 1.0 - (1.0 - rain) * (1.0 - drops / peak * np.float32(rng.uniform(0.3, 0.7)))
    return np.clip(1.0 - (1.0 - image) * (1.0 - rain[..., None]), 0.0, 1.0).astype(np.float32)


def synthesize(clean: np.ndarray, degradation: str, rng: np.random.Generator, model: str = "classic") -> np.ndarray:
    """Degrade a clean float32 H x W x 3 image in [0, 1] with the named degradation (a name or alias).

    ``model`` is ``classic`` (the benchmark's), ``realistic`` (matched to the real test sets; module
    docstring) or ``mixed`` (either, by a fair coin drawn from ``rng``). Deterministic given the state of
    ``rng``; returns a new float32 array of the same shape in [0, 1].
    """
    if model not in SYNTHESIS_MODELS:
        raise InputError(f"unknown synthesis {model!r}: choose one of {', '.join(SYNTHESIS_MODELS)}")
    name = resolve_degradation(degradation)
    family = DEGRADATIONS[name].family
    if name == "camnoise":  # the camera's noise in every model (no coin drawn)
        return camera_noise(clean, rng)
    realistic = model == "realistic" or (model == "mixed" and rng.random() < 0.5)
    if name in NOISE_SIGMAS:
        if realistic and name == "noise15":  # the lightest noise prompt also learns a camera's noise
            return camera_noise(clean, rng)
        return gaussian_noise(clean, NOISE_SIGMAS[name], rng)
    if family == "rain":
        return realistic_rain(clean, rng) if realistic else rain_streaks(clean, rng)
    if family == "haze":
        return realistic_haze(clean, rng) if realistic else haze(clean, rng)
    if family == "blur":
        return motion_blur(clean, rng)
    if family == "lowlight":
        return camera_low_light(clean, rng) if realistic else low_light(clean, rng)
    raise UnknownDegradationError(f"no synthetic version of the degradation {name!r}")  # pragma: no cover


def add_gaussian_noise_uint8(clean_uint8: np.ndarray, sigma: float,
                             seed: int | np.random.RandomState = 0) -> np.ndarray:
    """The paper's noisy test input: ``clip(clean + N(0, 1) * sigma, 0, 255)`` cast to uint8.

    DESIGN.md section 5: the noise comes from numpy's legacy generator seeded with 0 (``np.random.seed(0)``
    in the reference scripts), drawn at the image's (cropped) shape and added in float64 to the 8-bit
    image; the cast truncates, as ``astype(np.uint8)`` does. Pass a ``RandomState`` to continue one stream
    over several images; an int seeds a fresh one.
    """
    if clean_uint8.dtype != np.uint8:
        raise InputError(f"expected an 8-bit image (uint8), got {clean_uint8.dtype}")
    state = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)
    noise = state.randn(*clean_uint8.shape)
    return np.clip(clean_uint8 + noise * sigma, 0, 255).astype(np.uint8)
