"""Measure the degradation detector (issue 16) and print the tables docs/detection.md quotes.

    .venv/bin/python scripts/measure_detector.py                      # everything (~15 min on 2 CPU cores)
    .venv/bin/python scripts/measure_detector.py --skip-psnr --skip-chain   # the confusion matrices only (~1 min)

1. Confusion matrices of the detector (``--detector``, default: the shipped one) on the real test splits
   (``--realsets``: Rain100L inputs = rain, LOL low = lowlight, CBSD68 + Gaussian noise sigma 15/25/50 = noise,
   drawn as ``dfpir eval`` draws it, SOTS inputs = haze, every clean target = clean) and on the built-in
   synthetic benchmark's held-out photos (scikit-image's astronaut, coffee, chelsea, rocket, motorcycle at
   256 px, degraded with seeds ``--seeds``; seed 0 is exactly what ``dfpir eval --dataset synthetic`` scores).
2. Chained against single passes of the default model on synthetic two-degradation photos (the held-out photos
   hazy, rainy, blurred or dark, then noisy at sigma 25): each single prompt, both orders of the chain, and auto.
3. Auto against oracle PSNR per real set: ``dfpir eval --dataset NAME --root REALSETS/NAME -g auto --json``.
4. Detection time per photo of 0.15 and 12 MP (printed after the confusion matrices).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dfpir_cli.base.imageio import read_image  # noqa: E402
from dfpir_cli.data.photos import SHIPPED_PHOTOS, shipped_photos, square_crop, synthetic_rng  # noqa: E402
from dfpir_cli.data.synthesis import NOISE_SIGMAS, gaussian_noise, synthesize  # noqa: E402
from dfpir_cli.data.test_sets import find_dataset  # noqa: E402
from dfpir_cli.detect import RESTORE_ORDER, Detector, plan_prompts  # noqa: E402
from dfpir_cli.evaluate.benchmark import EvalOptions, PairLoader, restore_array  # noqa: E402
from dfpir_cli.evaluate.metrics import PAPER, score  # noqa: E402
from dfpir_cli.weights.prompts import FIVE_TASK  # noqa: E402
from dfpir_cli.weights.resolve import resolve_weights  # noqa: E402

COLUMNS = ("clean", *RESTORE_ORDER, "two")


def _pixels(path: Path) -> np.ndarray:
    return np.ascontiguousarray(read_image(path).pixels.permute(1, 2, 0).numpy())


def real_rows(realsets: Path) -> list[tuple[str, str, list[np.ndarray]]]:
    """(row name, true label, images) of the real test splits, read as `dfpir eval` reads them (PairLoader)."""
    degraded, clean = [], []
    for name, truth, side, target in (("Rain100L", "rain", "input", "target"), ("LOL", "lowlight", "low", "high"),
                                      ("CBSD68", "noise", "", "clean"), ("SOTS", "haze", "input", "target")):
        for test_set in find_dataset(name, realsets / name, (15, 25, 50)):
            loader = PairLoader(test_set, PAPER.crop_multiple)
            pairs = [loader.load(index) for index in range(len(test_set.pairs))]
            sigma = f" sigma {test_set.noise_sigma}" if test_set.noise_sigma else ""
            degraded.append((f"{name}{sigma} {side}".strip(), truth, [pair[0] for pair in pairs]))
            if not clean or clean[-1][0] != f"{name} {target}":
                clean.append((f"{name} {target}", "clean", [pair[1] for pair in pairs]))
    return degraded + clean


def synthetic_rows(seeds: list[int]) -> list[tuple[str, str, list[np.ndarray]]]:
    photos = [square_crop(_pixels(path), 256) for path in shipped_photos()]
    rows = [("clean", "clean", photos)]
    for name in FIVE_TASK:
        family = "noise" if name in NOISE_SIGMAS else name
        rows.append((name, family, [synthesize(photo, name, synthetic_rng(seed, name, index))
                                    for seed in seeds for index, photo in enumerate(photos)]))
    return rows


def confusion(detector: Detector, rows, title: str) -> dict:
    """Print one confusion matrix (rows: true sets; columns: the decision) and return it."""
    print(f"\n{title}\n")
    print("| set | images | " + " | ".join(COLUMNS) + " | accuracy | noise level right |")
    print("|---|---:|" + "---:|" * (len(COLUMNS) + 2))
    table = {}
    for name, truth, images in rows:
        counts = dict.fromkeys(COLUMNS, 0)
        level_right = level_total = 0
        for image in images:
            detection = detector.detect(image)
            counts["two" if len(detection.families) > 1 else detection.label] += 1
            if truth == "noise" and detection.families == ("noise",):
                sigma = next((s for s in (15, 25, 50) if f"{s}" in name), None)
                if sigma is not None:
                    level_total += 1
                    level_right += plan_prompts(detection, FIVE_TASK) == (f"noise{sigma}",)
        accuracy = counts[truth] / len(images)
        level = f"{level_right}/{level_total}" if level_total else ""
        print(f"| {name} | {len(images)} | " + " | ".join(str(counts[c]) for c in COLUMNS)
              + f" | {accuracy:.1%} | {level} |")
        table[name] = {"truth": truth, "counts": counts, "accuracy": accuracy}
    return table


def chain_table(detector: Detector, weights: str | None, seeds: list[int]) -> None:
    checkpoint = resolve_weights(weights, "cpu")
    options = EvalOptions(precision="fp32")
    photos = [square_crop(_pixels(path), 256) for path in shipped_photos()]
    print(f"\nChained vs single passes, default model, {len(photos) * len(seeds)} photos per row "
          f"({', '.join(SHIPPED_PHOTOS)} at 256 px, seeds {seeds}): PSNR dB\n")
    print("| photo has | input | first only | noise25 only | noise25 then first | first then noise25 | auto | auto picked |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for first in ("haze", "rain", "blur", "lowlight"):
        scores: dict[str, list[float]] = {}
        picked: dict[str, int] = {}
        for seed in seeds:
            for index, clean in enumerate(photos):
                rng = synthetic_rng(seed, f"{first}+noise", index)
                degraded = gaussian_noise(synthesize(clean, first, rng), 25, rng)

                def run(names: tuple[str, ...], degraded: np.ndarray = degraded) -> np.ndarray:
                    image = degraded
                    for name in names:
                        image = restore_array(checkpoint, image, name, options, torch.device("cpu"))
                    return image

                plan = plan_prompts(detector.detect(degraded), checkpoint.prompts.names)
                label = "+".join(plan) or "clean"
                picked[label] = picked.get(label, 0) + 1
                for method, names in (("input", ()), ("first", (first,)), ("noise", ("noise25",)),
                                      ("noise-first", ("noise25", first)), ("first-noise", (first, "noise25")),
                                      ("auto", plan)):
                    scores.setdefault(method, []).append(score(run(names), clean)[0])
        means = {method: float(np.mean(values)) for method, values in scores.items()}
        shown = ", ".join(f"{label} {count}" for label, count in sorted(picked.items(), key=lambda kv: -kv[1]))
        print(f"| {first} + noise 25 | " + " | ".join(f"{means[m]:.2f}" for m in
              ("input", "first", "noise", "noise-first", "first-noise", "auto")) + f" | {shown} |", flush=True)


def psnr_table(realsets: Path, detector_path: str | None, weights: str | None) -> None:
    print("\nAuto vs oracle prompt, default model, real test splits (dfpir eval -g auto): PSNR dB\n")
    print("| set | images | oracle PSNR | auto PSNR | auto - oracle | oracle prompt picked | detected |")
    print("|---|---:|---:|---:|---:|---:|---|")
    commands = []
    for name in ("Rain100L", "LOL", "CBSD68", "SOTS"):
        command = [sys.executable, "-m", "dfpir_cli", "eval", "--dataset", name, "--root", str(realsets / name),
                   "-g", "auto", "--json", "--quiet"]
        command += ["--detector", detector_path] if detector_path else []
        command += ["--weights", weights] if weights else []
        commands.append(" ".join(command[1:]))
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        if result.returncode != 0:
            print(f"| {name} | failed: {result.stderr.strip().splitlines()[-1:]} |")
            continue
        for entry in json.loads(result.stdout)["sets"]:
            detected = entry.get("detected", {})
            share = detected.get(entry["degradation"], 0) / max(1, entry["images"])
            print(f"| {entry['label']} | {entry['images']} | {entry['psnr']:.2f} | {entry['auto_psnr']:.2f} | "
                  f"{entry['auto_psnr'] - entry['psnr']:+.2f} | {share:.0%} | "
                  + ", ".join(f"{label} {count}" for label, count in detected.items()) + " |", flush=True)
    print("\ncommands:\n  " + "\n  ".join(commands))


def speed(detector: Detector, repeats: int = 5) -> None:
    """Milliseconds per photo for `dfpir detect` (the photo and its mirror image), best of ``repeats``, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print(f"\nDetection time per photo (the network on the photo and its mirror image; best of {repeats}, one thread):")
    rng = np.random.default_rng(0)
    for width, height in ((481, 321), (4000, 3000)):
        photo = rng.random((height, width, 3), dtype=np.float32)
        detector.detect(photo)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            detector.detect(photo)
            times.append(time.perf_counter() - started)
        print(f"  {width} x {height} ({width * height / 1e6:.2f} MP): {1000 * min(times):.0f} ms")
    torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default=None, help="detector folder (default: the shipped one)")
    parser.add_argument("--weights", default=None, help="restoration checkpoint (default: the shipped model)")
    parser.add_argument("--realsets", type=Path, default=Path(os.environ.get("DFPIR_REALSETS") or
                                                              ROOT.parent / "shared" / "realsets"))
    parser.add_argument("--seeds", default="0,1,2,3", help="synthetic degradation seeds (comma-separated)")
    parser.add_argument("--skip-psnr", action="store_true", help="no auto-vs-oracle PSNR on the real sets")
    parser.add_argument("--skip-chain", action="store_true", help="no chained-vs-single measurement")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    detector = Detector.load(args.detector)
    started = time.perf_counter()
    images = 0
    if args.realsets.is_dir():
        rows = real_rows(args.realsets)
        images += sum(len(row[2]) for row in rows)
        confusion(detector, rows, f"Real test splits ({args.realsets}): rows are the truth, columns the decision")
    else:
        print(f"{args.realsets} not found: no real-set measurements (pass --realsets)")
    rows = synthetic_rows(seeds)
    images += sum(len(row[2]) for row in rows)
    confusion(detector, rows, f"Synthetic benchmark, held-out photos, seeds {seeds}")
    print(f"\n{images} photos detected in {time.perf_counter() - started:.1f} s (reading and noising included)")
    speed(detector)
    if not args.skip_chain:
        chain_table(detector, args.weights, seeds[:2])
    if not args.skip_psnr and args.realsets.is_dir():
        psnr_table(args.realsets, args.detector, args.weights)


if __name__ == "__main__":
    main()
