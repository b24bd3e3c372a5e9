"""Publishing a checkpoint on the Hugging Face Hub: its model card, and one commit of config.json,
model.safetensors and README.md (``dfpir push-weights``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi

from ..errors import HubError
from ..model import PRESETS
from .checkpoint import Checkpoint, load_checkpoint
from .hub import (
    CARD_NAME,
    CHECKPOINT_FILES,
    DEFAULT_REVISION,
    LIBRARY_NAME,
    hub_endpoint,
    hub_error,
    is_hub_failure,
    is_offline,
    split_repo_spec,
)
from .prompts import DEGRADATIONS

_FAMILY_TAGS = {"noise": "image-denoising", "rain": "image-deraining", "haze": "image-dehazing",
                "blur": "image-deblurring", "lowlight": "low-light-image-enhancement"}


def _preset_name(checkpoint: Checkpoint) -> str | None:
    named = checkpoint.metadata.get("preset")
    if isinstance(named, str):
        return named
    return next((name for name, config in PRESETS.items() if config == checkpoint.config), None)


def _eval_rows(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluation results from metadata: a list of row dicts, or ``{dataset: {metric: value}}``."""
    results = metadata.get("eval") or metadata.get("evaluation") or metadata.get("results")
    if isinstance(results, dict):
        return [{"dataset": name, **values} if isinstance(values, dict) else {"dataset": name, "value": values}
                for name, values in results.items()]
    if isinstance(results, list):
        return [row for row in results if isinstance(row, dict)]
    return []


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def model_card(checkpoint: Checkpoint, repo_id: str) -> str:
    """A model card (README.md) with the Hub's YAML front matter: library tag, tasks, preset, eval table."""
    prompts, metadata, config = checkpoint.prompts, checkpoint.metadata, checkpoint.config
    families = sorted({DEGRADATIONS[name].family for name in prompts.names if name in DEGRADATIONS})
    tags = [LIBRARY_NAME, "image-restoration", "all-in-one-image-restoration"]
    tags += [_FAMILY_TAGS[family] for family in families]
    front = ["---", f"library_name: {LIBRARY_NAME}", "pipeline_tag: image-to-image", "tags:"]
    front += [f"- {tag}" for tag in tags]
    if isinstance(metadata.get("license"), str):
        front.append(f"license: {metadata['license']}")
    front.append("---")
    preset = _preset_name(checkpoint)
    parameters = f"{sum(p.numel() for p in checkpoint.model.parameters()):,}"
    for name, values in checkpoint.prompt_weights.items():
        modules = ", ".join(dict.fromkeys(key.split(".")[0] for key in values))
        parameters += f"; {name}: {sum(v.numel() for v in values.values()):,} more of its own ({modules})"
    encoder = ("CLIP ViT-B/32 (OpenAI) text codes, as in the paper" if prompts.encoder == "clip"
               else f"{prompts.encoder} codes (no CLIP: only the degradation names below work, not free text)")
    sections = [
        "\n".join(front),
        f"# {repo_id.split('/')[-1]}",
        "A DFPIR all-in-one image restoration checkpoint (Tian et al., CVPR 2025) for the `dfpir` "
        "command-line tool. One network restores "
        f"{', '.join(families) or 'degraded images'}, guided by a prompt that names the degradation.",
        "## Use\n\n```bash\npip install dfpir-cli\n"
        f"dfpir fetch-weights {repo_id}\n"
        f"dfpir restore photo.jpg --weights {repo_id} --degradation {prompts.names[0] if prompts.names else 'NAME'}\n```",
        "## Degradations\n\n" + _table(("name", "aliases", "prompt text"), [
            (name, ", ".join(DEGRADATIONS[name].aliases) if name in DEGRADATIONS else "", text)
            for name, text in zip(prompts.names, prompts.texts, strict=True)]),
        "## Network\n\n" + _table(("field", "value"), [
            ("preset", preset or "custom"), ("parameters", parameters), ("prompt encoder", encoder),
            *((key, value) for key, value in config.to_dict().items())]),
    ]
    rows = _eval_rows(metadata)
    if rows:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        sections.append("## Evaluation\n\n" + _table(columns, [[row.get(c, "") for c in columns] for row in rows]))
    extra = [(key, value) for key, value in metadata.items()
             if key not in ("eval", "evaluation", "results", "license", "tasks") and isinstance(value, (str, int, float))]
    if extra:
        sections.append("## Training\n\n" + _table(("field", "value"), extra))
    sections.append("## Format\n\n`config.json` (network config, prompt names and texts, metadata) and "
                    "`model.safetensors` (weights under `model.*`, prompt codes under `prompts.codes`), "
                    "loaded with strict key checks by `dfpir`.")
    sections.append("## Reference\n\nTian et al., *Degradation-Aware Feature Perturbation for All-in-One Image "
                    "Restoration*, CVPR 2025.")
    return "\n\n".join(sections) + "\n"


@dataclass(frozen=True)
class PushResult:
    repo_url: str
    commit_url: str
    revision: str


def push_checkpoint(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                    commit_message: str | None = None, card: str | None = None) -> PushResult:
    """Publish a checkpoint folder as one commit: config.json, model.safetensors and a model card.

    The folder is validated (it must load strictly) first; nothing is written into it. The card is
    generated by :func:`model_card` unless ``card`` (the text of a README.md) is given.
    """
    folder = Path(folder)
    repo_id, revision = split_repo_spec(repo_id, revision)
    checkpoint = load_checkpoint(folder)
    card_text = card if card is not None else model_card(checkpoint, repo_id)
    if is_offline():
        raise HubError("HF_HUB_OFFLINE is set: publishing needs the network; unset it.")
    api = HfApi(endpoint=hub_endpoint())
    branch = revision or DEFAULT_REVISION
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if branch != DEFAULT_REVISION:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
                      for name in CHECKPOINT_FILES]
        operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card_text.encode()))
        commit = api.create_commit(repo_id, operations, revision=branch,
                                   commit_message=commit_message or f"Upload dfpir checkpoint ({folder.name})")
    except Exception as error:  # noqa: BLE001 - translated when it is a Hub failure, else re-raised
        if is_hub_failure(error):
            raise hub_error(error, repo_id, branch, action="upload") from error
        raise
    return PushResult(str(repo_url), commit.commit_url, branch)
