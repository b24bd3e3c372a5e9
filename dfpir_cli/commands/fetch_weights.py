"""`dfpir fetch-weights`: checkpoints from the Hugging Face Hub, the CLIP weights, and the authors' .pth.tar files."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import HubError, InputError
from ..weights import hub, official
from ..weights.checkpoint import save_checkpoint
from ..weights.prompts import CLIP_HF_REPO, find_clip_weights
from .common import JsonOpt, QuietOpt, console, err_console, handle_errors


class PromptSet(str, Enum):
    five_task = "five-task"
    three_task = "three-task"
    three_task_simple = "three-task-simple"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _usage(weights: str, names: tuple[str, ...]) -> str:
    example = names[0] if names else "NAME"
    return (f"Use it:\n  dfpir restore photo.jpg --weights {weights} --degradation {example}\n"
            f"  dfpir eval --weights {weights} ...\n"
            f"Degradations it knows: {', '.join(names)}")


def _official_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, model in official.OFFICIAL.items():
        folder = official.official_dir(name)
        cached = official.is_cached(name)
        provenance = {}
        if cached:
            try:
                provenance = json.loads((folder / "config.json").read_text()).get("metadata", {}).get("provenance", {})
            except (OSError, ValueError):
                provenance = {}
        rows.append({"name": official.PREFIX + name, "description": model.description, "cached": cached,
                     "path": str(folder), "sha256": provenance.get("sha256"), "source_url": provenance.get("source_url")})
    return rows


def _show_list(as_json: bool) -> None:
    authors = _official_rows()
    cached = hub.cached_checkpoints()
    clip = find_clip_weights()
    try:
        remote, remote_error = hub.hub_checkpoints(), None
    except HubError as error:
        remote, remote_error = [], str(error)
    if as_json:
        console.print_json(json.dumps({
            "cache": str(hub.cache_dir()),
            "official": authors,
            "cached": [{"repo_id": c.repo_id, "commit": c.commit, "refs": list(c.refs), "tasks": list(c.tasks),
                        "size": c.size, "complete": c.complete, "path": str(c.path)} for c in cached],
            "clip_weights": str(clip) if clip else None,
            "hub": None if remote_error else [{"repo_id": m.repo_id, "downloads": m.downloads, "likes": m.likes,
                                               "last_modified": m.last_modified.isoformat() if m.last_modified else None}
                                              for m in remote],
            "hub_error": remote_error}))
        return
    table = Table(title=f"The authors' checkpoints (from their Google Drive folder; cache {official.official_root()})")
    for column in ("name", "tasks", "cached"):
        table.add_column(column)
    for row in authors:
        table.add_row(str(row["name"]), str(row["description"]), "[green]yes[/]" if row["cached"] else "no")
    console.print(table)
    missing = [str(row["name"]) for row in authors if not row["cached"]]
    if missing:
        console.print("Fetch one with: " + " | ".join(f"dfpir fetch-weights {name}" for name in missing),
                      highlight=False, soft_wrap=True)
    local = Table(title=f"dfpir checkpoints in the local cache ({hub.cache_dir()})")
    for column in ("repository", "revision", "tasks", "size"):
        local.add_column(column)
    for item in cached:
        revision = ", ".join(item.refs) or item.commit[:10]
        local.add_row(item.repo_id, revision + ("" if item.complete else " (incomplete)"), ", ".join(item.tasks),
                      _size(item.size))
    console.print(local if cached else "[dim]No dfpir checkpoint in the local cache yet.[/]")
    console.print(f"CLIP ViT-B/32 weights: {clip}" if clip else
                  "CLIP ViT-B/32 weights: not cached ([bold]dfpir fetch-weights --clip[/] fetches them)",
                  highlight=False, soft_wrap=True)
    if remote_error:
        console.print(f"[yellow]Hub not listed:[/] {remote_error}", highlight=False)
        return
    online = Table(title=f"dfpir checkpoints on the Hub ({hub.hub_endpoint()}, library tag '{hub.LIBRARY_NAME}')")
    for column in ("repository", "downloads", "likes", "updated"):
        online.add_column(column)
    for model in remote:
        online.add_row(model.repo_id, str(model.downloads if model.downloads is not None else "-"),
                       str(model.likes if model.likes is not None else "-"),
                       model.last_modified.date().isoformat() if model.last_modified else "-")
    console.print(online if remote else "[dim]No model with the dfpir library tag on the Hub.[/]")


def _fetch(repo_id: str, revision: str | None, sha256: str | None, quiet: bool, as_json: bool) -> None:
    result = hub.fetch_checkpoint(repo_id, revision, sha256, progress=not quiet)
    checkpoint = result.checkpoint
    weights = f"{result.repo_id}@{revision}" if revision else result.repo_id
    if as_json:
        console.print_json(json.dumps({
            "repo_id": result.repo_id, "revision": result.revision, "commit": result.commit, "path": str(result.path),
            "sha256": result.sha256, "size": result.size, "from_cache": result.from_cache,
            "degradations": list(checkpoint.prompts.names), "prompt_encoder": checkpoint.prompts.encoder}))
        return
    if result.from_cache:
        err_console.print("[yellow]The Hub could not be used; the cached copy was checked and is used.[/]")
    parameters = sum(p.numel() for p in checkpoint.model.parameters())
    lines = [f"Fetched {weights} (commit {result.commit[:10]}) into the Hugging Face cache:",
             f"  folder:            {result.path}",
             f"  model.safetensors: {_size(result.size)}, {parameters:,} parameters, prompt encoder "
             f"{checkpoint.prompts.encoder}"]
    if result.sha256:
        lines.append(f"  sha256:            {result.sha256} (verified)")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)
    console.print(_usage(weights, checkpoint.prompts.names), highlight=False, soft_wrap=True)
    console.print("It loads from the cache from now on, offline included (HF_HUB_OFFLINE=1).", highlight=False)


def _fetch_official(spec: str, file: str | None, force: bool, quiet: bool, as_json: bool) -> None:
    result = official.fetch_official(spec, progress=not quiet, force=force, file=file)
    weights = official.PREFIX + result.name
    if as_json:
        console.print_json(json.dumps({
            "name": weights, "path": str(result.path), "source_url": result.source_url, "file_name": result.file_name,
            "size": result.size, "sha256": result.sha256, "already_cached": result.already_cached,
            "degradations": list(result.checkpoint.prompts.names)}))
        return
    if result.already_cached:
        console.print(f"{weights} is already in the cache ({result.path}, from {result.file_name or 'an unnamed file'}) "
                      "and loads; --force fetches it again.", highlight=False, soft_wrap=True)
    else:
        parameters = sum(p.numel() for p in result.checkpoint.model.parameters())
        console.print("\n".join([
            f"Fetched the authors' {result.name} checkpoint, converted it and checked that it runs:",
            f"  from:    {result.source_url} ({result.file_name}, {_size(result.size)})",
            f"  sha256:  {result.sha256}",
            f"  stored:  {result.path} ({parameters:,} parameters, prompt codes from CLIP ViT-B/32)"]),
            highlight=False, soft_wrap=True)
        _say_dropped(result.checkpoint.metadata.get("provenance", {}))
    console.print(_usage(weights, result.checkpoint.prompts.names), highlight=False, soft_wrap=True)
    console.print("It loads from dfpir's cache from now on, offline included.", highlight=False)


def _say_dropped(provenance: dict) -> None:
    dropped = provenance.get("dropped_keys") or []
    if dropped:
        console.print(f"  dropped: {len(dropped)} obsolete scalars the network does not use "
                      f"({', '.join(dropped[:3])}{', ...' if len(dropped) > 3 else ''}); `dfpir info` lists them",
                      highlight=False, soft_wrap=True)


def _import(source: Path, prompts: PromptSet | None, output: Path | None, clip_weights: Path | None,
            force: bool) -> None:
    if prompts is None or output is None:
        raise InputError("--import-official needs --prompts (five-task, three-task or three-task-simple: the "
                         "vocabulary the checkpoint was trained with) and --output DIR")
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not force:
        raise InputError(f"{output} already exists and is not empty; choose another --output or pass --force")
    if output.resolve() == source.resolve():
        raise InputError("--output must not be the input file")
    checkpoint = hub.import_official(source, prompts.value, clip_weights)
    checkpoint.metadata["provenance"] = {
        "source": "a file imported with --import-official", "file_name": source.name, "size": source.stat().st_size,
        "sha256": hub.sha256_of(source), **checkpoint.metadata.get("provenance", {})}
    save_checkpoint(output, checkpoint.model, checkpoint.prompts, checkpoint.metadata)
    console.print(f"Imported {source} ({prompts.value} prompts, codes from CLIP ViT-B/32) into {output}",
                  highlight=False, soft_wrap=True)
    _say_dropped(checkpoint.metadata["provenance"])
    console.print(_usage(str(output), checkpoint.prompts.names), highlight=False, soft_wrap=True)


def fetch_weights(
    repo_id: Annotated[str | None, typer.Argument(
        help="official:five-task, official:three-task or official:three-task-simple (the authors' weights from "
             "their Google Drive folder, converted once), or a Hub repository of a dfpir checkpoint: owner/name, "
             "or owner/name@revision.",
        show_default=False)] = None,
    revision: Annotated[str | None, typer.Option(
        "--revision", "-r", help="Branch, tag or commit to fetch (default: main).")] = None,
    sha256: Annotated[str | None, typer.Option(
        "--sha256", help="Expected sha256 of model.safetensors; on a mismatch the download is removed and the "
                         "command fails.")] = None,
    list_: Annotated[bool, typer.Option(
        "--list", help="List the dfpir checkpoints in the local cache and, when online, those on the Hub "
                       "(library tag 'dfpir').")] = False,
    clip: Annotated[bool, typer.Option(
        "--clip", help=f"Fetch the CLIP ViT-B/32 (OpenAI) weights ({CLIP_HF_REPO}) that encode free-text prompts, "
                       "into the cache open_clip reads, so later runs work offline.")] = False,
    import_official: Annotated[Path | None, typer.Option(
        "--import-official", metavar="FILE", help="Convert a checkpoint published by the paper's authors "
        "(.pth.tar, downloaded by hand) into a dfpir checkpoint folder; needs --prompts and --output.",
        show_default=False)] = None,
    prompts: Annotated[PromptSet | None, typer.Option(
        "--prompts", help="With --import-official: the prompt vocabulary that checkpoint was trained with. "
                          "five-task: the 5-task model; three-task: the 3-task model with detailed prompts; "
                          "three-task-simple: the 3-task model with one-word prompts.", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="With --import-official: the checkpoint folder to write.", show_default=False)] = None,
    clip_weights: Annotated[Path | None, typer.Option(
        "--clip-weights", metavar="FILE", help="With --import-official: a local open_clip ViT-B-32 (openai) "
        "weights file, instead of the cached one.", show_default=False)] = None,
    file: Annotated[str | None, typer.Option(
        "--file", metavar="NAME", help="With official:NAME: the file to take from the authors' Drive folder (its name "
        "or its path there), when the folder holds several that fit or none whose name says which model it is. "
        "A file whose name says it is another model is refused.", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="With --import-official: replace an existing --output folder. With official:NAME: "
                        "download and convert again although it is cached.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fetch dfpir checkpoints from the Hugging Face Hub, the CLIP weights, or import the authors' checkpoints.

    [bold]dfpir fetch-weights official:five-task[/] downloads the authors' checkpoint from their Google Drive folder,
    fetches CLIP ViT-B/32 from the Hub if needed, converts it with strict key checks, checks that it runs, and stores
    it in dfpir's cache; [bold]--weights official:five-task[/] then works offline. The file is chosen by its name (5D/3D,
    SP = simple prompts, the pn/pr/ph/pb/pl score fields); when several fit, or none, the folder is listed and
    [bold]--file NAME[/] picks one. The twelve obsolete attn1-attn3 scalars the authors' files carry are dropped and
    recorded; any other stray key is refused.

    [bold]dfpir fetch-weights owner/name[/] downloads config.json + model.safetensors (+ model card) into the HF cache.

    It checks the sha256 and that the checkpoint loads; [bold]--weights owner/name[/] then works offline.

    Environment: HF_ENDPOINT (a mirror), HF_HOME / HF_HUB_CACHE (cache location), HF_TOKEN (private or gated repos),
    DFPIR_CACHE (dfpir's cache, default ~/.cache/dfpir), DFPIR_DRIVE_ENDPOINT (send Google Drive requests elsewhere).
    """
    with handle_errors():
        modes = [name for name, on in (("REPO_ID", repo_id is not None), ("--list", list_), ("--clip", clip),
                                       ("--import-official", import_official is not None)) if on]
        if len(modes) != 1:
            raise InputError("give exactly one of REPO_ID, --list, --clip or --import-official FILE"
                             + (f" (got {', '.join(modes)})" if modes else ""))
        if (revision or sha256) and repo_id is None:
            raise InputError("--revision and --sha256 go with REPO_ID")
        is_official = repo_id is not None and official.is_official_spec(repo_id)
        if (prompts or output or clip_weights) and import_official is None:
            raise InputError("--prompts, --output and --clip-weights go with --import-official FILE")
        if force and import_official is None and not is_official:
            raise InputError("--force goes with --import-official FILE or official:NAME")
        if file is not None and not is_official:
            raise InputError("--file goes with official:NAME (a file of the authors' Drive folder)")
        if is_official and (revision or sha256):
            raise InputError("--revision and --sha256 go with a Hub repository, not official:NAME (its sha256 is "
                             "recorded at download time)")
        if list_:
            _show_list(as_json)
        elif clip:
            path = hub.fetch_clip(progress=not quiet)
            if as_json:
                console.print_json(json.dumps({"clip_weights": str(path)}))
            else:
                console.print(f"CLIP ViT-B/32 (OpenAI) weights: {path}\nFree-text prompts and --import-official "
                              "now work offline.", highlight=False, soft_wrap=True)
        elif import_official is not None:
            _import(import_official, prompts, output, clip_weights, force)
        elif is_official:
            assert repo_id is not None
            _fetch_official(repo_id, file, force, quiet, as_json)
        else:
            assert repo_id is not None
            _fetch(repo_id, revision, sha256, quiet, as_json)
