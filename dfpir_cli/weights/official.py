"""The authors' published checkpoints, downloaded from their Google Drive folder and converted once.

``dfpir fetch-weights official:five-task`` lists the authors' public Drive folder (the link in the
reference repository's README), picks the file of that task by its name, downloads it with gdown (which
knows Drive's confirmation pages and quota errors), encodes the prompts with CLIP ViT-B/32 (fetched
from the Hub when not cached), imports it with the strict importer, runs it once, and stores a dfpir
checkpoint under :func:`official_dir` with its provenance (source URL, size, sha256) in ``config.json``.
``--weights official:NAME`` then loads that folder; it never downloads.

``DFPIR_DRIVE_ENDPOINT`` sends the requests meant for Google's hosts to another address (a mirror, or
the local stand-in the tests use); the path then starts with the host's name, e.g.
``http://127.0.0.1:8000/drive.google.com/uc?id=...``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from ..base.locations import dfpir_cache_dir
from ..errors import CheckpointError, ClipUnavailableError, DfpirError, HubError, InputError
from .checkpoint import Checkpoint, is_checkpoint_dir, load_checkpoint, save_checkpoint
from .prompts import PromptStyle, find_clip_weights

DRIVE_FOLDER_ID = "15bOk4xrsK1b3nIu3-OzUj4O_ZssdFN5Y"
DRIVE_FOLDER_URL = f"https://drive.google.com/drive/folders/{DRIVE_FOLDER_ID}"
DRIVE_ENDPOINT_ENV = "DFPIR_DRIVE_ENDPOINT"
GOOGLE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
PREFIX = "official:"


class DriveError(DfpirError):
    """Google Drive could not be reached, refused the download, or sent something unusable."""


@dataclass(frozen=True)
class OfficialModel:
    name: str  # what users type after "official:"
    style: PromptStyle  # the prompt vocabulary it was trained with
    description: str
    tasks: int  # 5 or 3: what a file's name must say (by its "5D"/"3D" or by its score fields)
    simple_prompts: bool  # trained with one-word prompts ("SP" in the file name)


OFFICIAL: dict[str, OfficialModel] = {model.name: model for model in (
    OfficialModel("five-task", "five-task", "5 tasks: noise, rain, haze, motion blur, low light (paper Table 2)",
                  5, False),
    OfficialModel("three-task", "three-task", "3 tasks: noise, rain, haze; detailed prompts (paper Table 1)", 3, False),
    OfficialModel("three-task-simple", "three-task-simple", "3 tasks with one-word prompts (Noise, Rain, Haze)",
                  3, True),
)}

# The reference training scripts name a checkpoint by its validation scores, one field per task: "pn" noise (sigma
# 25), "pr" rain, "ph" haze, "pb" blur, "pl" low light, each PSNR-SSIM, then "avr" their mean; the 3-task files
# write "p_n" with three noise levels. E.g. DFPIR-5D-pn31.29-0.8889_pr37.62-0.9779_ph31.64-0.9794_pb28.82-0.8734_
# pl23.82-0.8428_avr30.64-0.9125.pth.tar and DFPIR-3D-SP_p_n34.12-0.9348_31.45-0.8911_28.18-0.8009_p_r38.63-0.9821_
# p_h31.93-0.9805avr32.86-0.9179.pt.
_SCORE = r"(\d+(?:\.\d+)?)-([01](?:\.\d+)?)"
_SCORE_FIELD = re.compile(rf"(?<![a-z])p_?([nrhbl])((?:_?{_SCORE})+)", re.IGNORECASE)
_AVERAGE_FIELD = re.compile(rf"avr_?{_SCORE}", re.IGNORECASE)
_FAMILY_LETTERS = {"n": "noise", "r": "rain", "h": "haze", "b": "blur", "l": "lowlight"}
_FIVE = (r"(?<![0-9.])5\s*-?\s*d(?![a-z])", r"five", r"5[\s_-]*task")
_THREE = (r"(?<![0-9.])3\s*-?\s*d(?![a-z])", r"three", r"3[\s_-]*task")
_SIMPLE = (r"(?<![a-z])sp(?![a-z])", r"simple")
_DETAILED = (r"(?<![a-z])dp(?![a-z])", r"detail")


def _says(text: str, *patterns: str) -> bool:
    return any(re.search(pattern, text, re.IGNORECASE) for pattern in patterns)


@dataclass(frozen=True)
class FileName:
    """What a checkpoint's file name (with its folder) says about it."""

    path: str
    marked_tasks: int | None  # from "5D"/"3D", "five"/"three", "5-task"/"3-task" (None: neither, or both)
    scored_tasks: int | None  # from the score fields: 5 with blur or low light, 3 with noise, rain and haze only
    prompts: str | None  # "simple" ("SP", "simple"), "detailed" ("DP", "detail"), or None (not said)
    scores: dict[str, tuple[float, ...]]  # family -> validation PSNRs in the name
    average: float | None  # the "avr" PSNR

    @property
    def tasks(self) -> int | None:
        """The task count the name says, or None where it says nothing or contradicts itself."""
        said = {count for count in (self.marked_tasks, self.scored_tasks) if count is not None}
        return said.pop() if len(said) == 1 else None

    @property
    def contradiction(self) -> str:
        """Why the name cannot be trusted ('' when it can)."""
        if self.marked_tasks and self.scored_tasks and self.marked_tasks != self.scored_tasks:
            return (f"says {self.marked_tasks} tasks but its scores are those of a {self.scored_tasks}-task model "
                    f"({', '.join(self.scores)})")
        if self.average is not None and self.scores:
            values = [value for scores in self.scores.values() for value in scores]
            if abs(sum(values) / len(values) - self.average) > 0.015:
                return f"its scores average {sum(values) / len(values):.2f} dB, not the {self.average:.2f} it names"
        if self.prompts is None and _says(self.path, *_SIMPLE) and _says(self.path, *_DETAILED):
            return "says both simple and detailed prompts"
        return ""

    def describe(self) -> str:
        parts = [f"{self.tasks} tasks" if self.tasks else "tasks not said"]
        if self.prompts:
            parts.append(f"{self.prompts} prompts")
        if self.average is not None:
            parts.append(f"validation mean {self.average:.2f} dB")
        if self.contradiction:
            parts.append(f"name contradicts itself: {self.contradiction}")
        return "; ".join(parts)


def read_file_name(path: str) -> FileName:
    """Parse a file's path in the Drive folder: task markers, prompt style and the score fields."""
    scores: dict[str, tuple[float, ...]] = {}
    for match in _SCORE_FIELD.finditer(path):
        family = _FAMILY_LETTERS[match.group(1).lower()]
        scores[family] = scores.get(family, ()) + tuple(float(psnr) for psnr, _ in re.findall(_SCORE, match.group(2)))
    average = _AVERAGE_FIELD.search(path)
    # Markers are read with the score fields cut out, so that no digit of a score reads as "5D".
    words = _AVERAGE_FIELD.sub(" ", _SCORE_FIELD.sub(" ", path))
    five, three = _says(words, *_FIVE), _says(words, *_THREE)
    marked = 5 if five and not three else 3 if three and not five else None
    if scores.keys() & {"blur", "lowlight"}:
        scored: int | None = 5
    elif {"noise", "rain", "haze"} <= scores.keys():
        scored = 3
    else:
        scored = None
    simple, detailed = _says(words, *_SIMPLE), _says(words, *_DETAILED)
    prompts = "simple" if simple and not detailed else "detailed" if detailed and not simple else None
    return FileName(path, marked, scored, prompts, scores, float(average.group(1)) if average else None)


def fits(model: OfficialModel, name: FileName) -> bool:
    """Whether a file of this name is ``model``'s checkpoint. A 3-task file not marked simple is taken as the
    detailed-prompt one (the paper's main 3-task model; its published name is not known)."""
    if name.contradiction or name.tasks != model.tasks:
        return False
    return name.prompts == "simple" if model.simple_prompts else name.prompts != "simple"


CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".tar", ".pt", ".ckpt")


def is_official_spec(spec: str) -> bool:
    return spec.strip().lower().startswith(PREFIX)


def official_model(spec: str) -> OfficialModel:
    """``official:NAME`` (or just ``NAME``) -> its entry; a clear error lists the names."""
    name = spec.strip().lower().removeprefix(PREFIX)
    if name not in OFFICIAL:
        raise InputError(f"{spec!r} is not one of the authors' checkpoints; choose "
                         + ", ".join(PREFIX + known for known in OFFICIAL))
    return OFFICIAL[name]


def official_root() -> Path:
    return dfpir_cache_dir() / "official"


def official_dir(name: str) -> Path:
    """Where ``official:NAME`` is stored once converted."""
    return official_root() / official_model(name).name


def is_cached(name: str) -> bool:
    return is_checkpoint_dir(official_dir(name))


def manual_route(model: OfficialModel) -> str:
    return (f"Manual route: download the {model.name} checkpoint (.pth.tar) from {DRIVE_FOLDER_URL} in a browser "
            "(or from the Baidu links in the reference repository's README), then run\n"
            f"  dfpir fetch-weights --import-official FILE --prompts {model.style} --output DIR\n"
            "and pass --weights DIR.")


def load_official(spec: str, device: str | torch.device = "cpu") -> Checkpoint:
    """The converted checkpoint ``official:NAME`` from the cache; never downloads."""
    model = official_model(spec)
    folder = official_dir(model.name)
    if not is_checkpoint_dir(folder):
        raise CheckpointError(f"{PREFIX}{model.name} is not in the local cache ({folder}). Fetch and convert it "
                              f"once with network access: `dfpir fetch-weights {PREFIX}{model.name}`.")
    return load_checkpoint(folder, device)


# ---------------------------------------------------------------------------------------------------------------
# Google Drive, through gdown


@contextmanager
def _drive_endpoint() -> Iterator[None]:
    """With ``$DFPIR_DRIVE_ENDPOINT`` set, requests to Google's hosts go there instead (same path and query).

    gdown opens its own ``requests`` sessions with Google's addresses written in; rewriting at the transport
    adapter keeps every step of gdown (folder page, confirmation pages, quota errors, size checks) in play.
    """
    endpoint = os.environ.get(DRIVE_ENDPOINT_ENV, "").rstrip("/")
    if not endpoint:
        yield
        return
    from requests.adapters import HTTPAdapter

    original = HTTPAdapter.send

    def send(self: HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url)
        if parts.hostname in GOOGLE_HOSTS:
            request.url = f"{endpoint}/{parts.hostname}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        return original(self, request, *args, **kwargs)

    HTTPAdapter.send = send  # type: ignore[method-assign]
    try:
        yield
    finally:
        HTTPAdapter.send = original  # type: ignore[method-assign]


def _drive_host() -> str:
    return os.environ.get(DRIVE_ENDPOINT_ENV) or "https://drive.google.com"


def _is_network_error(error: BaseException) -> bool:
    import requests

    current: BaseException | None = error
    while current is not None:
        if isinstance(current, (requests.ConnectionError, requests.Timeout)) and not isinstance(
                current, requests.exceptions.ChunkedEncodingError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _drive_error(error: BaseException, model: OfficialModel, what: str) -> DriveError:
    text = " ".join(str(error).split())
    if _is_network_error(error):
        return DriveError(f"cannot reach Google Drive ({_drive_host()}) to {what}: {type(error).__name__}. Check the "
                          f"network (and proxy settings), or use another machine.\n{manual_route(model)}")
    if re.search(r"too many users|quota|many accesses", text, re.IGNORECASE):
        return DriveError("Google Drive refused the download: its download quota for this file is exceeded (too "
                          "many downloads recently; Drive lifts this after a while, often within 24 hours). Try "
                          f"again later.\n{manual_route(model)}")
    if re.search(r"incomplete|announced|exceeds", text, re.IGNORECASE):
        return DriveError(f"the download from Google Drive was cut short ({text}). Nothing was kept; run the "
                          f"command again.\n{manual_route(model)}")
    return DriveError(f"Google Drive: could not {what} ({type(error).__name__}: {text}).\n{manual_route(model)}")


@dataclass(frozen=True)
class DriveFile:
    id: str
    path: str  # the file's path inside the folder


def list_folder(model: OfficialModel) -> list[DriveFile]:
    """The files of the authors' Drive folder (sub-folders included), as gdown reads its listing."""
    import gdown

    try:
        with _drive_endpoint():
            entries = gdown.download_folder(url=DRIVE_FOLDER_URL, skip_download=True, quiet=True, use_cookies=False,
                                            timeout=60)
    except Exception as error:  # noqa: BLE001 - every failure of the listing becomes one actionable message
        raise _drive_error(error, model, "list the authors' folder") from error
    # With skip_download=True gdown returns GoogleDriveFileToDownload(id, path, local_path) entries.
    return [DriveFile(entry.id, entry.path) for entry in entries if not isinstance(entry, str)]


def _listing(files: list[DriveFile]) -> str:
    rows = [f"  {f.path}  ({read_file_name(f.path).describe()})" if f.path.lower().endswith(CHECKPOINT_SUFFIXES)
            else f"  {f.path}  (not a checkpoint)" for f in files]
    return "\n".join(rows) or "  (empty)"


def _pick_hint(model: OfficialModel) -> str:
    return (f"Pick one by its name in the folder: dfpir fetch-weights {PREFIX}{model.name} --file NAME\n"
            + manual_route(model))


def pick_file(model: OfficialModel, files: list[DriveFile], chosen: str | None = None) -> DriveFile:
    """The folder's file for this task: ``chosen`` (a path in the folder, or a file name), else the one file
    whose name says it is this model (:func:`fits`). Refuses to guess when none or several fit, and refuses a
    chosen file whose name says it is another model."""
    if chosen is not None:
        return _chosen_file(model, files, chosen)
    candidates = [f for f in files if f.path.lower().endswith(CHECKPOINT_SUFFIXES) and fits(model, read_file_name(f.path))]
    if len(candidates) != 1:
        found = "no file" if not candidates else f"{len(candidates)} files"
        raise DriveError(f"{found} in the authors' folder {DRIVE_FOLDER_URL} looks like the {model.name} checkpoint "
                         f"({model.description}). The folder holds:\n{_listing(files)}\n{_pick_hint(model)}")
    return candidates[0]


def _chosen_file(model: OfficialModel, files: list[DriveFile], chosen: str) -> DriveFile:
    wanted = chosen.strip().strip("/")
    found = [f for f in files if f.path == wanted] or [f for f in files if Path(f.path).name == wanted] or [
        f for f in files if wanted.lower() in (f.path.lower(), Path(f.path).name.lower())]
    if len(found) != 1:
        what = f"no file named {chosen!r}" if not found else f"{len(found)} files named {chosen!r} (give its folder too)"
        raise DriveError(f"--file: {what} in the authors' folder {DRIVE_FOLDER_URL}. It holds:\n{_listing(files)}")
    file = found[0]
    if not file.path.lower().endswith(CHECKPOINT_SUFFIXES):
        raise DriveError(f"--file {chosen}: {file.path} is not a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
    name = read_file_name(file.path)
    said_prompts = {"simple": True, "detailed": False}.get(name.prompts or "")
    if (name.tasks not in (None, model.tasks) or (said_prompts is not None and said_prompts != model.simple_prompts)
            or name.contradiction):
        others = [other.name for other in OFFICIAL.values() if fits(other, name)]
        hint = f" It looks like {PREFIX}{others[0]}: fetch that instead." if others else ""
        raise DriveError(f"--file {chosen}: its name says {name.describe()}, but {PREFIX}{model.name} is the "
                         f"{model.description} model.{hint}")
    return file


def download_file(model: OfficialModel, file: DriveFile, folder: Path, progress: bool) -> tuple[Path, str]:
    """One Drive file into ``folder``; its sha256 is computed while it streams. gdown checks the announced size."""
    import gdown

    digest = hashlib.sha256()
    target = folder / Path(file.path).name
    try:
        with _drive_endpoint():
            gdown.download(id=file.id, output=str(target), quiet=not progress, use_cookies=False, hasher=digest,
                           timeout=60, retries=2)
    except Exception as error:  # noqa: BLE001 - every failure of the download becomes one actionable message
        raise _drive_error(error, model, f"download {file.path}") from error
    if not target.is_file():
        raise DriveError(f"Google Drive sent nothing for {file.path}.\n{manual_route(model)}")
    return target, digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# The whole route


@dataclass(frozen=True)
class OfficialResult:
    name: str
    path: Path
    source_url: str
    file_name: str
    size: int
    sha256: str
    checkpoint: Checkpoint
    already_cached: bool


def _ensure_clip(progress: bool) -> Path:
    found = find_clip_weights()
    if found is not None:
        return found
    from .hub import fetch_clip

    try:
        return fetch_clip(progress=progress)
    except HubError as error:
        raise ClipUnavailableError(
            f"CLIP ViT-B/32 (OpenAI) is needed to encode the checkpoint's prompts, and it could not be fetched: "
            f"{error}\nFetch it with `dfpir fetch-weights --clip` (or set $DFPIR_CLIP_WEIGHTS to an open_clip "
            "ViT-B-32 weights file), then run this command again. Nothing was downloaded from Google Drive.") from error


def verify_runs(checkpoint: Checkpoint) -> None:
    """One forward pass per prompt on a small random image: the converted network runs and stays finite."""
    size = checkpoint.model.multiple_of * 2
    image = torch.rand(1, checkpoint.config.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for name in checkpoint.prompts.names:
            out = checkpoint.model(image, checkpoint.prompts.code(name)[None])
            if out.shape != (1, checkpoint.config.out_channels, size, size) or not torch.isfinite(out).all():
                raise CheckpointError(f"the converted checkpoint does not run cleanly with the prompt {name!r} "
                                      f"(output shape {tuple(out.shape)}, finite: {bool(torch.isfinite(out).all())})")


def fetch_official(spec: str, *, progress: bool = True, force: bool = False, file: str | None = None) -> OfficialResult:
    """Download, convert, check and store one of the authors' checkpoints (see the module docstring).

    ``file`` names the file to take from the Drive folder when its name alone does not single it out
    (:func:`pick_file`); a cached copy is only replaced with ``force``. Nothing is left in the cache unless
    every step passed: the download goes to a temporary folder that is removed, and the checkpoint folder is
    written atomically.
    """
    from .hub import import_official

    model = official_model(spec)
    folder = official_dir(model.name)
    if is_checkpoint_dir(folder) and not force:
        checkpoint = load_checkpoint(folder)
        source = checkpoint.metadata.get("provenance", {})
        return OfficialResult(model.name, folder, source.get("source_url", ""), source.get("file_name", ""),
                              int(source.get("size", 0)), source.get("sha256", ""), checkpoint, True)
    chosen = pick_file(model, list_folder(model), file)
    clip = _ensure_clip(progress)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", suffix=".download", dir=folder.parent))
    try:
        path, sha256 = download_file(model, chosen, staging, progress)
        size = path.stat().st_size
        try:
            checkpoint = import_official(path, model.style, clip)
        except CheckpointError as error:
            raise CheckpointError(f"the file {chosen.path} from the authors' folder cannot be used as the "
                                  f"{model.name} checkpoint: {error}\nNothing was stored.") from error
        verify_runs(checkpoint)
        source_url = f"https://drive.google.com/file/d/{chosen.id}/view"
        checkpoint.metadata["provenance"] = {
            "source": "authors' Google Drive folder", "folder_url": DRIVE_FOLDER_URL, "source_url": source_url,
            "file_name": chosen.path, "size": size, "sha256": sha256,
            "chosen_by": f"--file {file}" if file else f"its name ({read_file_name(chosen.path).describe()})",
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "converted_by": "dfpir fetch-weights " + PREFIX + model.name,
            **{key: value for key, value in checkpoint.metadata.get("provenance", {}).items()
               if key.startswith("dropped_")}}
        checkpoint.metadata["source"] = chosen.path
        save_checkpoint(folder, checkpoint.model, checkpoint.prompts, checkpoint.metadata)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OfficialResult(model.name, folder, source_url, chosen.path, size, sha256, load_checkpoint(folder), False)
