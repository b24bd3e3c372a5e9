"""Checkpoints on the Hugging Face Hub: fetch into the HF cache, load from it offline (publishing: publish.py).

A dfpir checkpoint on the Hub is a model repository holding ``config.json`` + ``model.safetensors``
(and a ``README.md`` model card), tagged with the library name ``dfpir``. Files go through
huggingface_hub's own cache (``HF_HOME`` / ``HF_HUB_CACHE``), so ``--weights owner/name`` resolves from
that cache with no network at all once fetched.

Integrity: the weights' sha256 is checked against ``--sha256``, against the Hub's LFS record and against the
one ``config.json`` recorded when the checkpoint was written, before a download is kept; a failed fetch removes
the cache entries it created, so a later (offline) run never trusts a partial or corrupt file. Weights always
load with strict keys (STYLE.md 9).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, constants, hf_hub_download, scan_cache_dir, try_to_load_from_cache
from huggingface_hub.errors import (
    CacheNotFound,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import get_session
from huggingface_hub.utils import tqdm as hf_tqdm

from ..errors import CheckpointError, HubError, InputError
from .checkpoint import (
    CONFIG_NAME,
    FORMAT,
    WEIGHTS_NAME,
    Checkpoint,
    PromptBank,
    import_reference,
    infer_config,
    load_checkpoint,
    read_reference_state_dict,
    sha256_of,
)
from .prompts import CLIP_FILENAMES, CLIP_HF_REPO, PromptStyle, find_clip_weights, vocabulary

LIBRARY_NAME = "dfpir"  # the Hub's library tag: `library_name` in the card, and what --list searches for
CARD_NAME = "README.md"
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME)
DEFAULT_REVISION = "main"
LOGIN_HINT = "log in with `hf auth login` (or set HF_TOKEN) using a token that can read it"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


# ---------------------------------------------------------------------------------------------------------------
# Names, cache location, offline mode


def split_repo_spec(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """``owner/name`` or ``owner/name@revision`` -> (repo id, revision); an explicit ``revision`` wins."""
    repo_id, _, at_revision = spec.strip().partition("@")
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise InputError(f"{spec!r} is not a Hugging Face repository id: use owner/name (optionally owner/name@revision)")
    return repo_id, revision or at_revision or None


def looks_like_repo_id(spec: str) -> bool:
    """Whether ``spec`` reads as ``owner/name[@revision]`` and is not a local path (for --weights)."""
    if Path(spec).exists() or spec.startswith((".", "/", "~")) or spec.endswith((".pth", ".tar", ".pt")):
        return False
    try:
        repo_id, _ = split_repo_spec(spec)
    except InputError:
        return False
    return "/" in repo_id


def cache_dir() -> Path:
    """The Hugging Face hub cache in use (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    """``HF_HUB_OFFLINE=1``: huggingface_hub refuses every request, so only the cache can serve."""
    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    return constants.ENDPOINT


def _storage_folder(repo_id: str) -> Path:
    return cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model")


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot folder holding a complete checkpoint for this revision, without any network."""
    paths = [try_to_load_from_cache(repo_id, name, cache_dir=cache_dir(), revision=revision or DEFAULT_REVISION)
             for name in CHECKPOINT_FILES]
    if all(isinstance(path, str) for path in paths):
        folders = {Path(path).parent for path in paths}  # type: ignore[arg-type]
        if len(folders) == 1:
            return folders.pop()
    return None


def _cached_revisions(repo_id: str) -> list[str]:
    refs = _storage_folder(repo_id) / "refs"
    return sorted(path.name for path in refs.iterdir()) if refs.is_dir() else []


# ---------------------------------------------------------------------------------------------------------------
# Errors: huggingface_hub's exceptions -> messages a user can act on


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_kind(error: BaseException, *names: str) -> bool:
    # The transport library changed across huggingface_hub versions (requests, httpx, httpx2): match by name.
    return any(cls.__name__ in names for cls in type(error).__mro__)


def _is_transfer_error(error: BaseException) -> bool:
    return (_is_kind(error, "RemoteProtocolError", "ReadError", "ChunkedEncodingError", "IncompleteRead",
                     "ContentDecodingError")
            or (isinstance(error, OSError) and "Consistency check failed" in str(error)))


def _is_network_error(error: BaseException) -> bool:
    return _is_kind(error, "ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ProxyError",
                    "ConnectionError", "Timeout") and not _is_transfer_error(error)


def _where(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}" if revision else repo_id


def hub_error(error: BaseException, repo_id: str, revision: str | None = None, filename: str | None = None,
              action: str = "download") -> HubError:
    """Translate a huggingface_hub / transport error into a :class:`HubError` that says what to do."""
    where = _where(repo_id, revision)
    endpoint = hub_endpoint()
    for cause in _chain(error):
        if isinstance(cause, GatedRepoError):
            return HubError(f"{where} is a gated repository: accept its conditions on {endpoint}/{repo_id}, "
                            f"then {LOGIN_HINT}.")
        if isinstance(cause, RepositoryNotFoundError):
            return HubError(f"repository {repo_id} was not found on {endpoint} (or it is private: {LOGIN_HINT}). "
                            "Check the spelling; `dfpir fetch-weights --list` shows published dfpir checkpoints.")
        if isinstance(cause, RevisionNotFoundError):
            return HubError(f"{repo_id} has no revision {revision!r} (branch, tag or commit). "
                            "Leave out --revision for the main branch.")
        if isinstance(cause, EntryNotFoundError) and not isinstance(cause, LocalEntryNotFoundError):
            return HubError(f"{where} has no file {filename or ''!s}: "
                            + ("it is not a dfpir checkpoint (it needs config.json and model.safetensors)."
                               if filename in CHECKPOINT_FILES else "it is not in that repository."))
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            status = cause.response.status_code
            if status == 401:
                return HubError(f"the Hub refused access to {where} (401 Unauthorized): {LOGIN_HINT}.")
            if status == 403:
                needed = "write to" if action == "upload" else "read"
                return HubError(f"the Hub refused access to {where} (403 Forbidden): your token may not {needed} "
                                f"it, or the repository is gated; check its page {endpoint}/{repo_id}.")
            if status == 404:
                return HubError(f"{where} or its file {filename or ''} was not found on {endpoint} (404).")
            if status >= 500:
                return HubError(f"the Hub ({endpoint}) failed with HTTP {status}: try again later.")
            return HubError(f"the Hub answered HTTP {status} for {where}: {cause}")
        if isinstance(cause, OfflineModeIsEnabled):
            return HubError(f"HF_HUB_OFFLINE is set and {where} is not in the local cache ({cache_dir()}). "
                            f"Run `dfpir fetch-weights {repo_id}` once with network access (HF_HUB_OFFLINE unset).")
        if _is_transfer_error(cause):
            return HubError(f"the transfer of {filename or 'a file'} from {where} was interrupted or incomplete "
                            f"({cause}). Nothing partial was kept; run the command again.")
        if _is_network_error(cause):
            return HubError(f"cannot reach the Hub at {endpoint} ({type(cause).__name__}) and {where} is not in the "
                            f"local cache ({cache_dir()}). Check the network (and HF_ENDPOINT / proxy settings), or "
                            "fetch it on a machine with network access and copy the cache.")
    if isinstance(error, LocalEntryNotFoundError):
        return HubError(f"{where} is not in the local cache ({cache_dir()}) and the Hub cannot be used: "
                        f"run `dfpir fetch-weights {repo_id}` with network access.")
    return HubError(f"{action} of {where} failed: {type(error).__name__}: {error}")


# ---------------------------------------------------------------------------------------------------------------
# Downloading


def normalise_sha256(value: str | None) -> str | None:
    """A user-given sha256 (``sha256:`` prefix allowed), lower-cased; a clear error if it is not one."""
    if value is None:
        return None
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(digest):
        raise InputError(f"--sha256 needs 64 hexadecimal characters, got {value!r}")
    return digest


class _SilentTqdm(hf_tqdm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


class _CacheEntries:
    """The snapshot links and blobs one fetch adds to the cache: removed again if the fetch fails."""

    def __init__(self, repo_id: str) -> None:
        self.storage = _storage_folder(repo_id)
        blobs = self.storage / "blobs"
        self.blobs_before = {path.name for path in blobs.iterdir()} if blobs.is_dir() else set()
        self.added: list[Path] = []

    def add(self, pointer: Path) -> None:
        self.added.append(pointer)

    def remove(self, pointer: Path, blob_too: bool = False) -> None:
        """Drop a snapshot entry, and its blob when this fetch created it (or ``blob_too``)."""
        blob = Path(os.path.realpath(pointer))
        pointer.unlink(missing_ok=True)
        if blob != pointer and (blob_too or blob.name not in self.blobs_before):
            blob.unlink(missing_ok=True)
        snapshot = self.storage / "snapshots" / pointer.relative_to(self.storage / "snapshots").parts[0]
        if snapshot.is_dir() and not any(snapshot.rglob("*")):
            snapshot.rmdir()
        self._drop_dangling_refs()

    def _drop_dangling_refs(self) -> None:
        # A branch name pointing at a removed snapshot would make huggingface_hub report the cache as corrupt.
        refs = self.storage / "refs"
        for ref in refs.rglob("*") if refs.is_dir() else ():
            if ref.is_file() and not (self.storage / "snapshots" / ref.read_text().strip()).is_dir():
                ref.unlink()

    def discard(self) -> None:
        for pointer in reversed(self.added):
            self.remove(pointer)
        self.added.clear()


def _model_info(api: HfApi, repo_id: str, revision: str | None) -> Any:
    # One request without retries: its failure tells quickly whether the Hub is reachable and readable.
    return api.model_info(repo_id, revision=revision, files_metadata=True, timeout=constants.HF_HUB_ETAG_TIMEOUT)


def is_hub_failure(error: BaseException) -> bool:
    """Errors that mean "the Hub could not serve this", as opposed to bugs, which propagate unchanged."""
    return (isinstance(error, (HfHubHTTPError, OSError, EntryNotFoundError))
            or _is_network_error(error) or _is_transfer_error(error))


def _fell_offline(error: BaseException) -> bool:
    return any(_is_network_error(cause) for cause in _chain(error))


def _download(repo_id: str, filename: str, revision: str, entries: _CacheEntries, progress: bool,
              asked: str | None = None) -> Path:
    """One file into the cache; ``asked`` is the revision the user named, for messages."""
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir(),
                                    tqdm_class=None if progress else _SilentTqdm))
    except Exception as error:  # noqa: BLE001 - translated when it is a Hub failure, else re-raised
        if is_hub_failure(error):
            raise hub_error(error, repo_id, asked, filename) from error
        raise
    entries.add(path)
    return path


def _verify_sha256(path: Path, repo_id: str, revision: str | None, expected: dict[str, str],
                   entries: _CacheEntries) -> str:
    """Hash ``path``; on any mismatch remove it (blob included) so no later run trusts it."""
    actual = sha256_of(path)
    for source, digest in expected.items():
        if digest != actual:
            entries.remove(path, blob_too=True)
            raise HubError(f"checksum mismatch for {path.name} of {_where(repo_id, revision)}: {source} says "
                           f"sha256 {digest}, the downloaded file has {actual}. The file was removed from the "
                           "cache. Run again; if it persists, check the expected value (it must be the sha256 of "
                           f"{path.name} at this revision).")
    return actual


def _expected_hashes(sibling: Any, path: Path, user_sha256: str | None) -> dict[str, str]:
    expected: dict[str, str] = {}
    if user_sha256:
        expected["--sha256"] = user_sha256
    lfs = getattr(sibling, "lfs", None)
    if lfs is not None and getattr(lfs, "sha256", None):
        expected["the Hub's LFS record"] = str(lfs.sha256).lower()
    blob_name = Path(os.path.realpath(path)).name
    if _SHA256.match(blob_name) and "the Hub's LFS record" not in expected:
        expected["the Hub's ETag"] = blob_name  # LFS files are stored under their sha256
    return expected


@dataclass(frozen=True)
class FetchResult:
    """Where a fetched checkpoint lies in the cache, and what it is."""

    repo_id: str
    revision: str  # as asked (branch, tag or commit)
    commit: str  # the commit the files come from
    path: Path  # the snapshot folder: config.json + model.safetensors (+ README.md)
    sha256: str | None  # of model.safetensors, when it was checked
    size: int  # bytes of model.safetensors
    from_cache: bool  # served by the cache because the Hub could not be used
    checkpoint: Checkpoint


def _from_cache(repo_id: str, revision: str | None, folder: Path, user_sha256: str | None,
                device: str | torch.device) -> FetchResult:
    weights = folder / WEIGHTS_NAME
    digest = None
    if user_sha256:
        digest = _verify_sha256(weights, repo_id, revision, {"--sha256": user_sha256}, _CacheEntries(repo_id))
    return FetchResult(repo_id, revision or DEFAULT_REVISION, folder.name, folder, digest, weights.stat().st_size,
                       True, load_checkpoint(folder, device))


def fetch_checkpoint(repo_id: str, revision: str | None = None, sha256: str | None = None, *,
                     device: str | torch.device = "cpu", progress: bool = True) -> FetchResult:
    """Download a dfpir checkpoint into the HF cache, check its hashes and that it loads.

    ``config.json`` comes first so a repository that is not a dfpir checkpoint is refused before its
    weights are downloaded. With ``HF_HUB_OFFLINE`` or no network, a complete cached copy is used.
    """
    repo_id, revision = split_repo_spec(repo_id, revision)
    user_sha256 = normalise_sha256(sha256)
    if is_offline():
        folder = cached_snapshot(repo_id, revision)
        if folder is None:
            raise hub_error(OfflineModeIsEnabled("offline"), repo_id, revision)
        return _from_cache(repo_id, revision, folder, user_sha256, device)
    api = HfApi(endpoint=hub_endpoint())
    try:
        info = _model_info(api, repo_id, revision)
    except Exception as error:  # noqa: BLE001 - translated when it is a Hub failure, else re-raised
        if not is_hub_failure(error):
            raise
        folder = cached_snapshot(repo_id, revision)
        if folder is not None and _fell_offline(error):
            return _from_cache(repo_id, revision, folder, user_sha256, device)
        raise hub_error(error, repo_id, revision, action="look-up") from error
    files = {sibling.rfilename: sibling for sibling in info.siblings or []}
    missing = [name for name in CHECKPOINT_FILES if name not in files]
    if missing:
        listing = ", ".join(sorted(files)[:12]) or "nothing"
        raise CheckpointError(f"{_where(repo_id, revision)} is not a dfpir checkpoint: it has no "
                              f"{' or '.join(missing)} (it holds {listing}). A dfpir checkpoint is published with "
                              "`dfpir push-weights`; a reference .pth.tar is converted with `--import-official`.")
    entries = _CacheEntries(repo_id)
    try:
        config_path = _download(repo_id, CONFIG_NAME, revision or DEFAULT_REVISION, entries, progress, revision)
        commit = config_path.parent.name
        if commit != info.sha:  # the branch moved since the look-up: the LFS record must be this commit's
            info = _model_info(api, repo_id, commit)
            files = {sibling.rfilename: sibling for sibling in info.siblings or []}
        try:
            config_format = json.loads(config_path.read_text()).get("format")
        except (OSError, ValueError, AttributeError):
            config_format = None
        if config_format != FORMAT:
            raise CheckpointError(f"{_where(repo_id, revision)} is not a dfpir checkpoint: its config.json has no "
                                  f"\"format\": \"{FORMAT}\" (it may be a model for another library).")
        weights_path = _download(repo_id, WEIGHTS_NAME, commit, entries, progress, revision)
        expected = _expected_hashes(files.get(WEIGHTS_NAME), weights_path, user_sha256)
        digest = _verify_sha256(weights_path, repo_id, revision, expected, entries)
        if CARD_NAME in files:
            _download(repo_id, CARD_NAME, commit, entries, progress, revision)
        checkpoint = load_checkpoint(config_path.parent, device)
    except BaseException:
        entries.discard()
        raise
    return FetchResult(repo_id, revision or DEFAULT_REVISION, commit, config_path.parent, digest,
                       weights_path.stat().st_size, False, checkpoint)


def load_from_hub(repo_id: str, revision: str | None = None, device: str | torch.device = "cpu") -> Checkpoint:
    """The checkpoint of a Hub repository: from the cache when there (no network), else fetched first.

    ``repo_id`` may carry the revision as ``owner/name@revision``. A cached copy is used as is; run
    ``dfpir fetch-weights`` again to pick up a newer upload of a branch.
    """
    repo_id, revision = split_repo_spec(repo_id, revision)
    folder = cached_snapshot(repo_id, revision)
    if folder is not None:
        return load_checkpoint(folder, device)
    if is_offline():
        others = [name for name in _cached_revisions(repo_id) if name != (revision or DEFAULT_REVISION)]
        hint = (f" Cached revisions of it: {', '.join(others)} (use {repo_id}@REVISION)." if others else "")
        raise HubError(f"HF_HUB_OFFLINE is set and {_where(repo_id, revision)} is not in the local cache "
                       f"({cache_dir()}).{hint} Run `dfpir fetch-weights {repo_id}` once with network access.")
    return fetch_checkpoint(repo_id, revision, device=device).checkpoint


# ---------------------------------------------------------------------------------------------------------------
# Listing


@dataclass(frozen=True)
class CachedCheckpoint:
    repo_id: str
    commit: str
    refs: tuple[str, ...]  # branches / tags that point at this commit in the cache
    tasks: tuple[str, ...]
    size: int  # bytes on disk
    complete: bool  # config.json and model.safetensors both present
    path: Path


def cached_checkpoints() -> list[CachedCheckpoint]:
    """The dfpir checkpoints in the local HF cache (other repositories are skipped)."""
    try:
        info = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            names = {file.file_name for file in revision.files}
            if CONFIG_NAME not in names:
                continue
            try:
                config = json.loads((revision.snapshot_path / CONFIG_NAME).read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(config, dict) or config.get("format") != FORMAT:
                continue
            metadata = config.get("metadata") or {}
            tasks = metadata.get("tasks") or (config.get("prompts") or {}).get("names") or ()
            found.append(CachedCheckpoint(repo.repo_id, revision.commit_hash, tuple(sorted(revision.refs)),
                                          tuple(str(task) for task in tasks), revision.size_on_disk,
                                          WEIGHTS_NAME in names, revision.snapshot_path))
    return sorted(found, key=lambda item: (item.repo_id, item.refs, item.commit))


@dataclass(frozen=True)
class HubCheckpoint:
    repo_id: str
    downloads: int | None
    likes: int | None
    last_modified: datetime | None
    tags: tuple[str, ...]


def _check_reachable() -> None:
    """One quick request without retries (the listing API retries a dead network for ~20 s)."""
    try:
        get_session().head(hub_endpoint(), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as error:  # noqa: BLE001 - any transport failure means unreachable
        raise HubError(f"cannot reach the Hub at {hub_endpoint()} ({type(error).__name__})") from error


def hub_checkpoints(limit: int = 100) -> list[HubCheckpoint]:
    """Models on the Hub published with the dfpir library tag; :class:`HubError` when unreachable."""
    if is_offline():
        raise HubError("HF_HUB_OFFLINE is set")
    _check_reachable()
    try:
        models = list(HfApi(endpoint=hub_endpoint()).list_models(filter=LIBRARY_NAME, limit=limit))
    except Exception as error:  # noqa: BLE001 - translated to one message
        raise HubError(f"listing dfpir models on {hub_endpoint()} failed: {type(error).__name__}: {error}") from error
    return [HubCheckpoint(model.id, model.downloads, model.likes, model.last_modified, tuple(model.tags or ()))
            for model in models]


# ---------------------------------------------------------------------------------------------------------------
# CLIP weights and the authors' checkpoints


def fetch_clip(progress: bool = True) -> Path:
    """Download CLIP ViT-B/32 (OpenAI) weights into the cache open_clip and :func:`find_clip_weights` read."""
    if is_offline():
        cached = find_clip_weights()
        if cached is None:
            raise hub_error(OfflineModeIsEnabled("offline"), CLIP_HF_REPO)
        return cached
    try:
        info = _model_info(HfApi(endpoint=hub_endpoint()), CLIP_HF_REPO, None)
    except Exception as error:  # noqa: BLE001 - translated when it is a Hub failure, else re-raised
        if not is_hub_failure(error):
            raise
        cached = find_clip_weights()
        if cached is not None and _fell_offline(error):
            return cached
        raise hub_error(error, CLIP_HF_REPO, action="look-up") from error
    files = {sibling.rfilename: sibling for sibling in info.siblings or []}
    filename = next((name for name in CLIP_FILENAMES if name in files), None)
    if filename is None:
        raise HubError(f"{CLIP_HF_REPO} holds none of {', '.join(CLIP_FILENAMES)}; the Hub layout changed. "
                       "Download an open_clip ViT-B-32 (openai) weights file by hand and pass it with "
                       "--clip-weights or $DFPIR_CLIP_WEIGHTS.")
    entries = _CacheEntries(CLIP_HF_REPO)
    try:
        path = _download(CLIP_HF_REPO, filename, DEFAULT_REVISION, entries, progress)
        _verify_sha256(path, CLIP_HF_REPO, None, _expected_hashes(files[filename], path, None), entries)
    except BaseException:
        entries.discard()
        raise
    found = find_clip_weights()
    if found is None:
        raise HubError(f"downloaded {path}, but the CLIP lookup does not find it: is $DFPIR_CLIP_WEIGHTS set to "
                       "another file?")
    return found


def import_official(path: str | Path, style: PromptStyle, clip_weights: str | Path | None = None) -> Checkpoint:
    """Turn an authors' ``.pth.tar`` into a checkpoint whose prompt codes CLIP computes (DESIGN.md section 3).

    The file is read (safely, keys checked strictly) before CLIP is loaded, so an empty ``{}`` checkpoint
    or a wrong file is reported without needing the CLIP weights.
    """
    from .prompts import ClipTextEncoder

    names_texts = vocabulary(style)
    config = infer_config(read_reference_state_dict(path))
    encoder = ClipTextEncoder.load(clip_weights)
    codes = encoder.encode(list(names_texts.values()))
    prompts = PromptBank(tuple(names_texts), tuple(names_texts.values()), codes, "clip")
    return import_reference(path, prompts, config, metadata={"tasks": list(names_texts), "prompt_style": style,
                                                             "imported_from": "official DFPIR checkpoint"})
