"""Export clean training photos from public GitHub repositories that commit standard training sets.

Every photo is read from a pinned commit, checked against the real test splits (``../shared/realsets`` or
``--realsets``) and dropped when it equals a test image or is a crop of one (grey or colour, within 2/255 on
average: BSD400 crops and BSD300 photos are also the ground truths of CBSD68 and Rain100L). What is kept goes
to ``OUT/clean/`` as PNG, and ``OUT/sources.json`` records, per source, the repository, commit, path, licence
and the files kept and dropped (with the test image each dropped one matched). The package never ships them.

    python scripts/fetch_training_photos.py OUT                         # clones the sources with git
    python scripts/fetch_training_photos.py OUT --mirror cszn/DnCNN=/path/to/DnCNN.git ...   # local clones

Then train on them: ``dfpir train --clean-dir OUT/clean ...`` (see scripts/train_default_model.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Source:
    name: str
    repo: str  # owner/name on GitHub
    commit: str
    folder: str
    licence: str
    note: str


SOURCES = (
    Source("BSD400", "cszn/DnCNN", "e93b27812d3ff523a3a79d19e5e50d233d7a8d0a",
           "TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400",
           "BSDS300/500 images: Berkeley Segmentation Dataset, free for non-commercial research",
           "400 grey 180x180 crops of BSD photos (DnCNN's training set)"),
    Source("T91", "jiny2001/dcscn-super-resolution", "d382bc30d41c94ac72f8cb148d61cc4864b3b380", "data/yang91",
           "Yang et al. 2010 super-resolution training set, research use (repository: MIT)",
           "91 small colour photos (flowers, faces, buildings)"),
    Source("BSD200", "jiny2001/dcscn-super-resolution", "d382bc30d41c94ac72f8cb148d61cc4864b3b380", "data/bsd200",
           "BSDS300 train split: Berkeley Segmentation Dataset, free for non-commercial research",
           "200 colour 481x321 photos; many are Rain100L test ground truths and are dropped"),
)
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
DEGRADED_FOLDERS = ("input", "low")  # realsets' degraded inputs; their clean counterparts are what photos can equal
MATCH_TOLERANCE = 2.0 / 255.0  # mean absolute difference under which two images count as the same pixels


class TestSetGuard:
    """The real test images, for dropping training photos equal to them or cropped from them."""

    def __init__(self, realsets: Path) -> None:
        self.images: list[tuple[str, np.ndarray]] = []  # (relative name, grey float32 in [0, 1])
        for path in sorted(realsets.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.parent.name not in DEGRADED_FOLDERS:
                image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                if image is not None:
                    self.images.append((str(path.relative_to(realsets)), image.astype(np.float32) / 255.0))
        if not self.images:
            raise SystemExit(f"no test images under {realsets}: the guard needs them (pass --realsets)")

    def match(self, grey: np.ndarray) -> str | None:
        """The test image that ``grey``, in any of its eight orientations, equals or is a crop of; or None.

        Repositories re-share test photos turned a quarter or mirrored (one re-split Rain100L's test pairs so),
        so every rotation and mirror image of ``grey`` is tried.
        """
        for turns in range(4):
            for oriented in (np.rot90(grey, turns), np.rot90(grey, turns)[:, ::-1]):
                name = self._match_as_is(np.ascontiguousarray(oriented))
                if name is not None:
                    return name
        return None

    def _match_as_is(self, grey: np.ndarray) -> str | None:
        for name, test in self.images:
            if grey.shape[0] > test.shape[0] or grey.shape[1] > test.shape[1]:
                continue
            scores = cv2.matchTemplate(test, grey, cv2.TM_SQDIFF)
            if float(scores.min()) / grey.size >= MATCH_TOLERANCE**2:
                continue
            top, left = np.unravel_index(int(scores.argmin()), scores.shape)
            window = test[top:top + grey.shape[0], left:left + grey.shape[1]]
            if float(np.abs(window - grey).mean()) < MATCH_TOLERANCE:
                return name
        return None


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def _clone(source: Source, scratch: Path) -> Path:
    target = scratch / source.repo.replace("/", "+")
    if not target.exists():
        print(f"cloning {source.repo} (blobs of {source.folder} only) ...", file=sys.stderr)
        subprocess.run(["git", "clone", "--quiet", "--bare", "--filter=blob:none",
                        f"https://github.com/{source.repo}.git", str(target)], check=True)
    return target


def export(source: Source, repo: Path, guard: TestSetGuard, out: Path) -> dict:
    names = [n for n in _git(repo, "ls-tree", "--name-only", f"{source.commit}:{source.folder}").decode().split("\n")
             if n.lower().endswith(IMAGE_SUFFIXES)]
    kept, dropped = [], []
    for name in sorted(names):
        data = _git(repo, "show", f"{source.commit}:{source.folder}/{name}")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            dropped.append({"file": name, "reason": "not decodable"})
            continue
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
        twin = guard.match(grey)
        if twin is not None:
            dropped.append({"file": name, "reason": f"equals or is a crop of test image {twin}"})
            continue
        is_grey = bool(np.abs(image[..., 0].astype(int) - image[..., 2]).max() <= 1)
        stored = f"{source.name}_{Path(name).stem}.png"
        encoded = cv2.imencode(".png", image[..., 0] if is_grey else image)[1].tobytes()
        (out / stored).write_bytes(encoded)
        kept.append({"file": stored, "from": name, "sha256": hashlib.sha256(data).hexdigest()})
    print(f"{source.name}: kept {len(kept)} of {len(names)}, dropped {len(dropped)}", file=sys.stderr)
    return {"name": source.name, "repository": f"https://github.com/{source.repo}", "commit": source.commit,
            "path": source.folder, "licence": source.licence, "note": source.note, "kept": kept, "dropped": dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (clean/ and sources.json are written there)")
    parser.add_argument("--realsets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realsets",
                        help="the real test splits to guard against (default: ../shared/realsets)")
    parser.add_argument("--mirror", action="append", default=[], metavar="OWNER/NAME=GITDIR",
                        help="use a local clone (bare or not) holding the pinned commit instead of cloning")
    parser.add_argument("--only", nargs="*", choices=[s.name for s in SOURCES], help="export only these sources")
    args = parser.parse_args()

    mirrors = dict(item.split("=", 1) for item in args.mirror)
    guard = TestSetGuard(args.realsets)
    print(f"guarding against {len(guard.images)} test images under {args.realsets}", file=sys.stderr)
    clean = args.out / "clean"
    clean.mkdir(parents=True, exist_ok=True)
    report = []
    with tempfile.TemporaryDirectory() as scratch:
        for source in SOURCES:
            if args.only and source.name not in args.only:
                continue
            repo = Path(mirrors[source.repo]) if source.repo in mirrors else _clone(source, Path(scratch))
            report.append(export(source, repo, guard, clean))
    (args.out / "sources.json").write_text(json.dumps({"sources": report}, indent=1) + "\n")
    total = sum(len(s["kept"]) for s in report)
    print(f"{total} photos in {clean}; provenance in {args.out / 'sources.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
