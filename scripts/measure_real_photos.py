"""Real photos (issue 32): blind detection per group of the development set, and real camera noise on PolyU.

The development set (``../shared/realphotos``, or ``--realphotos``; its README gives sources and licences) holds
photos as cameras recorded them: real rain, haze, dark rooms and noise, and PolyU's real camera noise with its
ground truth (one shot against the mean of many shots of a static scene). This prints:

1. Detection: per group, the share of photos whose decision includes the group's family (what
   ``dfpir restore`` with no ``--degradation`` restores them with), and the share of the clean photos of the real
   test splits (CBSD68, Rain100L targets, LOL high, SOTS targets) decided clean. Dark photos are split by mean
   luminance: below 0.2 they are underexposed and must be detected; 0.2-0.3 either answer is fair; above, they
   are backlit or dusk scenes and are not scored.
2. PolyU: PSNR/SSIM against the mean of the shots for the input, auto mode (detector and checkpoint as
   ``dfpir restore`` runs them, its precision included), each noise prompt, and CBM3D (``pip install bm3d``;
   sigma 6, as issue 32 measured it; ``--cbm3d-sigma 0`` leaves the column out). Photos exposed for their
   scene (mean luminance 0.2 or more) and darker ones apart: a dark one may get a low-light pass, which no
   PSNR against a dark reference rewards.

    .venv/bin/python scripts/measure_real_photos.py                       # the shipped model and detector
    .venv/bin/python scripts/measure_real_photos.py --detector DIR --weights DIR --json out.json --markdown
    .venv/bin/python scripts/measure_real_photos.py --report out.json --markdown  # the tables of a saved run
"""

from __future__ import annotations

import argparse
import json
import runpy
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from dfpir_cli.base.imageio import read_image
from dfpir_cli.data.test_sets import list_images
from dfpir_cli.detect import AutoPolicy, Detector
from dfpir_cli.detect.detector import known_families
from dfpir_cli.evaluate.metrics import score
from dfpir_cli.restore.pipeline import Restorer, auto_chooser
from dfpir_cli.weights.checkpoint import Checkpoint
from dfpir_cli.weights.prompts import family_of
from dfpir_cli.weights.resolve import resolve_weights

ROOT = Path(__file__).resolve().parents[2] / "shared"
GROUPS = (("rainy", "rain"), ("hazy", "haze"), ("dark", "lowlight"), ("noisy", "noise"), ("polyu/real", "noise"))
CLEAN_SETS = ("CBSD68", "Rain100L/target", "LOL/high", "SOTS/target")
DARK, FAIR = 0.2, 0.3  # mean luminance: below DARK must be detected as low light; DARK-FAIR either answer is fair
EXPOSED = 0.2  # PolyU photos at or above this mean luminance are scored apart from darker ones


def _pixels(path: Path) -> np.ndarray:
    return np.ascontiguousarray(read_image(path).pixels.permute(1, 2, 0).numpy())


def _luminance(image: np.ndarray) -> float:
    return float((image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean())


def detection(detector: Detector, realphotos: Path, realsets: Path, families: tuple[str, ...],
              policy: AutoPolicy) -> list[dict]:
    """Per group, what auto mode decides: the checkpoint's families and thresholds, as `dfpir restore` runs it."""
    rows = []
    for folder, family in GROUPS:
        hits, total, fair, decisions = 0, 0, 0, {}
        for path in list_images(realphotos / folder):
            image = _pixels(path)
            label = detector.detect(image, families, policy).label
            decisions[label] = decisions.get(label, 0) + 1
            if family == "lowlight" and _luminance(image) >= DARK:
                fair += _luminance(image) < FAIR
                continue
            total += 1
            hits += family in label.split("+")
        rows.append({"group": folder, "expected": family, "photos": total, "detected": hits,
                     "share": hits / max(1, total), "decisions": decisions,
                     **({"fair_either_way": fair} if family == "lowlight" else {})})
    for folder in CLEAN_SETS:
        paths = list_images(realsets / folder) if (realsets / folder).is_dir() else []
        clean = sum(detector.detect(_pixels(path), families, policy).label == "clean" for path in paths)
        rows.append({"group": f"{folder} (clean)", "expected": "clean", "photos": len(paths), "detected": clean,
                     "share": clean / max(1, len(paths))})
    return rows


def _cbm3d(image: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    return np.clip(bm3d.bm3d_rgb(image, sigma / 255.0), 0, 1).astype(np.float32)


def noise_prompts_of(checkpoint: Checkpoint) -> list[str]:
    """The checkpoint's noise prompts (noise15, noise25, noise50, and camnoise where it has one)."""
    return [name for name in checkpoint.prompts.names if family_of(name) == "noise"]


def polyu(checkpoint: Checkpoint, restorer: Restorer, detector: Detector, realphotos: Path,
          cbm3d: float) -> list[dict]:
    """One row per PolyU pair: luminance, input, auto (and what it chose), each noise prompt, CBM3D."""
    noise_prompts = noise_prompts_of(checkpoint)
    choose = auto_chooser(detector, checkpoint)  # the checkpoint's families and auto thresholds
    rows = []
    for noisy_path in list_images(realphotos / "polyu" / "real"):
        clean_path = realphotos / "polyu" / "mean" / noisy_path.name.replace("_real", "_mean")
        noisy, clean = _pixels(noisy_path), _pixels(clean_path)
        tensor = torch.from_numpy(noisy.transpose(2, 0, 1).copy())
        row: dict = {"photo": noisy_path.name, "luminance": _luminance(noisy), "input": score(noisy, clean)}
        choice = choose(tensor)
        row["auto_choice"] = choice.label
        auto = noisy if not choice.names else restorer.restore(tensor, names=choice.names).permute(1, 2, 0).numpy()
        row["auto"] = score(auto, clean)
        for name in noise_prompts:
            row[name] = score(restorer.restore(tensor, names=(name,)).permute(1, 2, 0).numpy(), clean)
        if cbm3d:
            row["CBM3D"] = score(_cbm3d(noisy, cbm3d), clean)
        rows.append(row)
    return rows


def _held_out_scenes() -> tuple[str, ...]:
    """The PolyU dev scenes the default model's fine-tune never saw (scripts/finetune_default_model.py)."""
    return tuple(runpy.run_path(str(Path(__file__).with_name("finetune_default_model.py")))["HELD_OUT_SCENES"])


def _summary(rows: list[dict], columns: list[str]) -> dict[str, dict[str, float]]:
    held_out = _held_out_scenes()
    groups = {"exposed (lum >= 0.2)": [r for r in rows if r["luminance"] >= EXPOSED],
              "dark (lum < 0.2)": [r for r in rows if r["luminance"] < EXPOSED],
              "exposed, scenes the default model never trained on": [
                  r for r in rows if r["luminance"] >= EXPOSED and r["photo"].startswith(held_out)]}
    out = {}
    for group, members in groups.items():
        if not members:
            continue
        entry: dict[str, float] = {"photos": len(members)}
        for column in columns:
            gains = [r[column][0] - r["input"][0] for r in members]
            entry[column] = float(np.mean([r[column][0] for r in members]))
            entry[f"{column} ssim"] = float(np.mean([r[column][1] for r in members]))
            entry[f"{column} worst gain"] = float(min(gains))
        out[group] = entry
    return out


def _show(console: Console, title: str, columns: list[str], rows: list[list[str]], markdown: bool) -> None:
    """A table, as rich draws it or as Markdown (for the README and docs/real-photos.md)."""
    if markdown:
        console.print(f"\n{title}:\n", highlight=False, soft_wrap=True)
        for line in (columns, ["---"] * len(columns), *rows):
            console.print("| " + " | ".join(line) + " |", highlight=False, soft_wrap=True, markup=False)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_report(report: dict, console: Console, markdown: bool = False) -> None:
    """The detection table and, when measured, the PolyU table and what auto mode chose."""
    rows = []
    for row in report["detection"]:
        decisions = ", ".join(f"{k} {v}" for k, v in sorted(row.get("decisions", {}).items(), key=lambda i: -i[1]))
        if "fair_either_way" in row:
            decisions += f" (+{row['fair_either_way']} at 0.2-0.3: fair either way)"
        rows.append([row["group"], row["expected"], str(row["photos"]), f"{100 * row['share']:.0f}%", decisions])
    _show(console, "Blind detection on real photos (dev set) and on the clean photos of the real test splits",
          ["group", "expected", "photos", "detected", "decisions"], rows, markdown)
    if "polyu" not in report:
        return
    summary, columns = report["polyu"]["summary"], report["polyu"]["columns"]
    rows = []
    for group, entry in summary.items():
        cells = [f"{entry[c]:.2f} / {entry[f'{c} ssim']:.3f}" + (
            f" (worst {entry[f'{c} worst gain']:+.2f})" if c != "input" else "") for c in ["input", *columns]]
        rows.append([group, str(int(entry["photos"])), *cells])
    _show(console, f"PolyU real camera noise (dev pairs), PSNR dB / SSIM, {report['polyu']['precision']}",
          ["photos", "n", "input", *columns], rows, markdown)
    choices: dict[str, int] = {}
    for row in report["polyu"]["photos"]:
        choices[row["auto_choice"]] = choices.get(row["auto_choice"], 0) + 1
    console.print(f"auto mode chose: {choices}", highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realphotos", type=Path, default=ROOT / "realphotos")
    parser.add_argument("--realsets", type=Path, default=ROOT / "realsets")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--detector", type=Path, default=None, help="detector folder (default: the shipped one)")
    parser.add_argument("--precision", default="auto", help="as `dfpir restore --precision` (default auto)")
    parser.add_argument("--cbm3d-sigma", type=float, default=6.0,
                        help="noise sigma (8-bit) CBM3D assumes on PolyU (default 6; 0 leaves the column out)")
    parser.add_argument("--skip-polyu", action="store_true", help="detection only")
    parser.add_argument("--json", type=Path, default=None, help="write every figure and per-photo row here")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    parser.add_argument("--report", type=Path, default=None, help="print the tables of a saved --json report; "
                                                                   "measures nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)

    console = Console()
    if args.report is not None:
        print_report(json.loads(args.report.read_text()), console, args.markdown)
        return
    checkpoint = resolve_weights(args.weights, "cpu")
    detector = Detector.load(args.detector)
    started = time.perf_counter()
    rows = detection(detector, args.realphotos, args.realsets, known_families(checkpoint.prompts.names),
                     AutoPolicy.of(checkpoint.metadata))
    report: dict = {"detection": rows}
    if not args.skip_polyu:
        cbm3d = args.cbm3d_sigma
        if cbm3d:
            try:
                import bm3d  # noqa: F401
            except ImportError:
                console.print("[yellow]bm3d is not installed (pip install bm3d): no CBM3D column[/]")
                cbm3d = 0.0
        restorer = Restorer(checkpoint, None, torch.device("cpu"), args.precision)
        polyu_rows = polyu(checkpoint, restorer, detector, args.realphotos, cbm3d)
        columns = ["auto", *noise_prompts_of(checkpoint), *(["CBM3D"] if cbm3d else [])]
        summary = _summary(polyu_rows, ["input", *columns])
        report["polyu"] = {"summary": summary, "photos": polyu_rows, "precision": restorer.precision,
                           "columns": columns}
    print_report(report, console, args.markdown)
    console.print(f"({time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
