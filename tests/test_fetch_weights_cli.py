"""`dfpir fetch-weights` and `dfpir push-weights` end to end (CliRunner) against the local fake Hub."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch
from conftest import make_checkpoint
from hub_server import FakeHub, RecordingApi, closed_port_endpoint, point_client_at, set_offline
from safetensors.torch import save_file
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.weights import hub
from dfpir_cli.weights.prompts import CLIP_HF_REPO, find_clip_weights

REPO = "lab/dfpir-micro"
runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory) -> dict[str, bytes]:
    folder = make_checkpoint(tmp_path_factory.mktemp("published") / "micro")
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.fixture
def fake_hub(monkeypatch, tmp_path, checkpoint_files):
    server = FakeHub()
    point_client_at(monkeypatch, server.start(), tmp_path / "hf")
    server.add_repo(REPO, checkpoint_files, tags=("dfpir",))
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    yield server
    server.stop()


def test_fetch_prints_where_and_how_to_use(fake_hub, checkpoint_files):
    digest = hashlib.sha256(checkpoint_files["model.safetensors"]).hexdigest()
    result = runner.invoke(app, ["fetch-weights", REPO, "--sha256", digest, "--quiet"])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert str(hub.cached_snapshot(REPO)) in text and f"sha256: {digest} (verified)" in text
    assert f"dfpir restore photo.jpg --weights {REPO} --degradation noise15" in text
    assert "offline included" in text


def test_fetch_json_and_offline_reuse(fake_hub, monkeypatch):
    assert runner.invoke(app, ["fetch-weights", REPO, "-q"]).exit_code == 0
    set_offline(monkeypatch)
    result = runner.invoke(app, ["fetch-weights", REPO, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["from_cache"] is True and summary["commit"] == fake_hub.repos[REPO].commit
    assert summary["degradations"][0] == "noise15"


def test_list_shows_cache_and_hub(fake_hub, monkeypatch):
    runner.invoke(app, ["fetch-weights", REPO, "-q"])
    fake_hub.add_repo("other/dfpir-small", {"config.json": b"{}"}, tags=("dfpir",))
    fake_hub.add_repo("other/bert", {"config.json": b"{}"}, tags=("transformers",))
    result = runner.invoke(app, ["fetch-weights", "--list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    local, online = result.output.split("dfpir checkpoints on the Hub")
    assert REPO in local and "main" in local and "noise15, noise25" in local
    assert "CLIP ViT-B/32 weights: not cached" in flat(local)
    assert REPO in online and "other/dfpir-small" in online and "other/bert" not in online
    listing = json.loads(runner.invoke(app, ["fetch-weights", "--list", "--json"]).stdout)
    assert [item["repo_id"] for item in listing["cached"]] == [REPO]
    assert sorted(item["repo_id"] for item in listing["hub"]) == [REPO, "other/dfpir-small"]
    set_offline(monkeypatch)
    result = runner.invoke(app, ["fetch-weights", "--list"])
    assert result.exit_code == 0 and REPO in result.output and "Hub not listed: HF_HUB_OFFLINE" in flat(result.output)


def test_failures_are_one_clear_line_and_exit_2(fake_hub, monkeypatch, tmp_path):
    cases = [(["lab/missing"], "repository lab/missing was not found"),
             ([REPO, "--sha256", "0" * 64], "checksum mismatch for model.safetensors"),
             ([REPO, "--revision", "nope"], "has no revision 'nope'")]
    for arguments, message in cases:
        result = runner.invoke(app, ["fetch-weights", *arguments, "-q"])
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and message in flat(result.output) and "Traceback" not in result.output
    point_client_at(monkeypatch, closed_port_endpoint(), tmp_path / "hf")
    result = runner.invoke(app, ["fetch-weights", REPO, "-q"])
    assert result.exit_code == 2 and "cannot reach the Hub" in flat(result.output)


def test_options_are_checked(fake_hub):
    for arguments, message in [([], "give exactly one of REPO_ID, --list, --clip or --import-official"),
                               ([REPO, "--list"], "(got REPO_ID, --list)"),
                               (["--list", "--sha256", "ab"], "--revision and --sha256 go with REPO_ID"),
                               ([REPO, "--prompts", "five-task"], "go with --import-official"),
                               (["not a repo"], "is not a Hugging Face repository id")]:
        result = runner.invoke(app, ["fetch-weights", *arguments])
        assert result.exit_code == 2 and message in flat(result.output), (arguments, result.output)


def test_clip_fetch(fake_hub, tmp_path):
    save_file({"text_projection": torch.randn(2, 2)}, tmp_path / "clip.safetensors")
    fake_hub.add_repo(CLIP_HF_REPO, {"open_clip_model.safetensors": (tmp_path / "clip.safetensors").read_bytes()})
    result = runner.invoke(app, ["fetch-weights", "--clip", "-q"])
    assert result.exit_code == 0, result.output
    assert str(find_clip_weights()) in flat(result.output)


def test_push_dry_run_prints_the_card_and_uploads_nothing(fake_hub, tmp_path):
    folder = make_checkpoint(tmp_path / "trained")
    result = runner.invoke(app, ["push-weights", str(folder), "me/new", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "library_name: dfpir" in result.output and "## Degradations" in result.output
    assert "nothing was uploaded" in flat(result.output)
    assert not [path for _, path in fake_hub.requests if "me/new" in path]


def test_push_uploads_and_says_how_to_fetch(fake_hub, monkeypatch, tmp_path):
    recorder = RecordingApi(fake_hub)
    recorder.install(monkeypatch)
    folder = make_checkpoint(tmp_path / "trained")
    card = tmp_path / "card.md"
    card.write_text("---\nlibrary_name: dfpir\n---\n# hand-written\n")
    result = runner.invoke(app, ["push-weights", str(folder), "me/new", "--branch", "exp", "--card", str(card),
                                 "-m", "v0"])
    assert result.exit_code == 0, result.output
    assert "dfpir fetch-weights me/new@exp" in flat(result.output)
    assert recorder.calls[-1] == ("create_commit", "me/new", "exp", "v0")
    fetched = hub.fetch_checkpoint("me/new@exp", progress=False)
    assert (fetched.path / "README.md").read_text() == card.read_text()


def test_push_refuses_what_does_not_load(fake_hub, tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    result = runner.invoke(app, ["push-weights", str(tmp_path / "half"), "me/new"])
    assert result.exit_code == 2 and "not a dfpir checkpoint" in flat(result.output)
    assert not [path for _, path in fake_hub.requests if "me/new" in path]
