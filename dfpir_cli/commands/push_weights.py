"""`dfpir push-weights`: publish a checkpoint folder on the Hugging Face Hub with a generated model card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ..weights import hub, publish
from ..weights.checkpoint import load_checkpoint
from .common import console, handle_errors


def push_weights(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="Checkpoint folder (config.json + model.safetensors).",
                                           show_default=False)],
    repo_id: Annotated[str, typer.Argument(metavar="REPO_ID", help="Hub repository to publish to: owner/name "
                                           "(created if it does not exist).", show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    revision: Annotated[str | None, typer.Option(
        "--revision", "--branch", help="Branch to commit to (created if needed; default: main).")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.")] = None,
    card: Annotated[Path | None, typer.Option(
        "--card", metavar="FILE", help="Use this README.md as the model card instead of the generated one.",
        show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the folder and print the model card; upload nothing.")] = False,
) -> None:
    """Publish a trained checkpoint on the Hugging Face Hub, as one commit with a generated model card.

    The folder must load (strict keys); nothing is written into it.

    The card lists the degradations and prompt texts, the network preset and config, the prompt encoder, the evaluation
    table when the checkpoint's metadata has one, and the [bold]dfpir[/] library tag that
    [bold]dfpir fetch-weights --list[/] searches for.

    Needs a token with write access: `hf auth login` or HF_TOKEN.
    """
    with handle_errors():
        if card is not None and not card.is_file():
            raise InputError(f"--card {card} is not a file")
        card_text = card.read_text() if card is not None else None
        if dry_run:
            repo, _ = hub.split_repo_spec(repo_id, revision)
            console.print(card_text if card_text is not None else publish.model_card(load_checkpoint(folder), repo),
                          markup=False, highlight=False)
            console.print(f"[dim]--dry-run: {folder} loads; nothing was uploaded to {repo}.[/]")
            return
        result = publish.push_checkpoint(folder, repo_id, private=private, revision=revision, commit_message=message,
                                     card=card_text)
        weights = repo_id if result.revision == hub.DEFAULT_REVISION else f"{repo_id.split('@')[0]}@{result.revision}"
        console.print(f"Published {folder} to {result.repo_url} (branch {result.revision})\n"
                      f"commit: {result.commit_url}\n"
                      f"Fetch it with: dfpir fetch-weights {weights}", highlight=False)
