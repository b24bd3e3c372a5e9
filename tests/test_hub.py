"""dfpir_cli.weights.hub against a local fake Hub driven by the real huggingface_hub client.

Covers a fetch and its cache reuse (offline, and with the network gone), and each failure the issue
lists: checksum mismatch, interrupted transfer, 404, gated/private, not a dfpir checkpoint, no network,
offline with nothing cached. After every failure the cache must hold nothing a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import torch
from conftest import MICRO, make_checkpoint, make_prompts
from hub_server import FakeHub, RecordingApi, closed_port_endpoint, point_client_at, set_offline
from huggingface_hub import scan_cache_dir
from safetensors.torch import save_file

from dfpir_cli.errors import CheckpointError, HubError, InputError
from dfpir_cli.model import DFPIR, PRESETS
from dfpir_cli.weights import hub, publish
from dfpir_cli.weights.checkpoint import load_checkpoint, save_checkpoint
from dfpir_cli.weights.prompts import CLIP_FILENAMES, CLIP_HF_REPO, find_clip_weights

REPO = "lab/dfpir-micro"


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory) -> dict[str, bytes]:
    folder = make_checkpoint(tmp_path_factory.mktemp("published") / "micro")
    return {path.name: path.read_bytes() for path in folder.iterdir()} | {"README.md": b"# micro\n"}


@pytest.fixture
def fake_hub(monkeypatch, tmp_path, checkpoint_files):
    server = FakeHub()
    point_client_at(monkeypatch, server.start(), tmp_path / "hf")
    server.add_repo(REPO, checkpoint_files, tags=("dfpir",), revisions=("main", "v1"))
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the client waits 1 s before resuming a transfer
    yield server
    server.stop()


def cache_files(kind: str) -> list[Path]:
    """Files under ``models--*/{kind}`` (blobs or snapshots) of the fake cache, plus stray partial downloads."""
    return sorted(path for path in hub.cache_dir().glob(f"models--*/{kind}/**/*") if path.is_file() or path.is_symlink())


def weights_sha(files: dict[str, bytes]) -> str:
    return hashlib.sha256(files["model.safetensors"]).hexdigest()


# -- success and cache reuse --------------------------------------------------------------------------------------


def test_fetch_downloads_verifies_and_loads(fake_hub, checkpoint_files):
    result = hub.fetch_checkpoint(REPO, sha256=weights_sha(checkpoint_files), progress=False)
    assert result.commit == fake_hub.repos[REPO].commit and result.path.name == result.commit
    assert sorted(path.name for path in result.path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert result.sha256 == weights_sha(checkpoint_files) and not result.from_cache
    assert (result.path / "model.safetensors").read_bytes() == checkpoint_files["model.safetensors"]
    assert result.checkpoint.config == MICRO
    # config.json is checked before the weights are requested
    paths = [path for _, path in fake_hub.requests]
    assert paths.index(f"/{REPO}/resolve/main/config.json") < min(
        i for i, path in enumerate(paths) if path.endswith("model.safetensors"))


def test_cached_checkpoint_loads_offline_and_without_network(fake_hub, monkeypatch, tmp_path):
    hub.fetch_checkpoint(REPO, progress=False)
    reference = load_checkpoint(hub.cached_snapshot(REPO))
    fake_hub.requests.clear()
    set_offline(monkeypatch)
    loaded = hub.load_from_hub(REPO)
    assert hub.fetch_checkpoint(REPO, progress=False).from_cache
    set_offline(monkeypatch, False)
    point_client_at(monkeypatch, closed_port_endpoint(), tmp_path / "hf")  # the network is gone
    assert hub.load_from_hub(REPO) is not None
    assert hub.fetch_checkpoint(REPO, progress=False).from_cache
    assert fake_hub.requests == []
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)


def test_revisions_resolve_from_the_cache(fake_hub, monkeypatch):
    hub.fetch_checkpoint(REPO, revision="v1", progress=False)
    set_offline(monkeypatch)
    assert hub.load_from_hub(f"{REPO}@v1").config == MICRO
    with pytest.raises(HubError, match=r"HF_HUB_OFFLINE is set.*Cached revisions of it: v1"):
        hub.load_from_hub(REPO)  # main was never fetched


def test_load_from_hub_fetches_what_is_not_cached(fake_hub):
    assert hub.load_from_hub(REPO).config == MICRO
    assert hub.cached_snapshot(REPO) is not None


def test_cached_and_hub_listings(fake_hub, checkpoint_files):
    fake_hub.add_repo("lab/unrelated", {"config.json": b'{"model_type": "bert"}'}, tags=("transformers",))
    hub.fetch_checkpoint(REPO, progress=False)
    hub.fetch_checkpoint(REPO, revision="v1", progress=False)
    with pytest.raises(CheckpointError):
        hub.fetch_checkpoint("lab/unrelated", progress=False)
    [cached] = hub.cached_checkpoints()
    assert cached.repo_id == REPO and cached.refs == ("main", "v1") and cached.complete
    assert cached.tasks == tuple(json.loads(checkpoint_files["config.json"])["metadata"]["tasks"])
    assert cached.size >= len(checkpoint_files["model.safetensors"])
    assert [model.repo_id for model in hub.hub_checkpoints()] == [REPO]


def test_hub_listing_fails_clearly_without_network(monkeypatch, tmp_path):
    point_client_at(monkeypatch, closed_port_endpoint(), tmp_path / "hf")
    start = time.perf_counter()
    with pytest.raises(HubError, match="cannot reach the Hub"):
        hub.hub_checkpoints()
    assert time.perf_counter() - start < 5
    assert hub.cached_checkpoints() == []


# -- integrity ------------------------------------------------------------------------------------------------------


def assert_nothing_trusted(repo_id: str = REPO) -> None:
    assert hub.cached_snapshot(repo_id) is None
    assert not [path for path in cache_files("snapshots") if path.name == "model.safetensors"]
    assert not [path for path in hub.cache_dir().rglob("*") if path.name.endswith(".incomplete")]
    if hub.cache_dir().is_dir():
        assert not scan_cache_dir(hub.cache_dir()).warnings  # huggingface_hub sees a consistent cache


def test_wrong_expected_sha256_removes_the_download(fake_hub, monkeypatch):
    with pytest.raises(HubError, match=r"checksum mismatch for model.safetensors.*--sha256 says sha256 0{64}"):
        hub.fetch_checkpoint(REPO, sha256="0" * 64, progress=False)
    assert_nothing_trusted()
    assert not cache_files("blobs")
    set_offline(monkeypatch)
    with pytest.raises(HubError, match="not in the local cache"):
        hub.load_from_hub(REPO)


def test_corrupt_transfer_is_caught_by_the_lfs_hash(fake_hub):
    fake_hub.corrupt.add("model.safetensors")
    with pytest.raises(HubError, match="checksum mismatch.*the Hub's LFS record"):
        hub.fetch_checkpoint(REPO, progress=False)
    assert_nothing_trusted()
    fake_hub.corrupt.clear()
    assert hub.fetch_checkpoint(REPO, progress=False).sha256  # a clean retry works


def test_cached_copy_with_another_sha256_is_not_trusted(fake_hub):
    hub.fetch_checkpoint(REPO, progress=False)
    with pytest.raises(HubError, match="checksum mismatch"):
        hub.fetch_checkpoint(REPO, sha256="f" * 64, progress=False)
    assert_nothing_trusted()


def test_weights_that_do_not_match_their_config_are_not_trusted(fake_hub, checkpoint_files, tmp_path):
    # The Hub's record matches the file (it was uploaded as is), but config.json recorded other weights:
    # model.safetensors was replaced without its config.json.
    other = make_checkpoint(tmp_path / "other", seed=7)
    fake_hub.add_repo("lab/mixed", {**checkpoint_files, "model.safetensors": (other / "model.safetensors").read_bytes()})
    with pytest.raises(CheckpointError, match="does not match the sha256 recorded in .*config.json"):
        hub.fetch_checkpoint("lab/mixed", progress=False)
    assert_nothing_trusted("lab/mixed")


def test_bad_sha256_syntax_is_an_input_error(fake_hub):
    with pytest.raises(InputError, match="64 hexadecimal"):
        hub.fetch_checkpoint(REPO, sha256="abc", progress=False)


@pytest.mark.parametrize("fault", ["connection closed mid-body", "wrong size header"])
def test_interrupted_transfer_leaves_nothing(fake_hub, checkpoint_files, fault):
    size = len(checkpoint_files["model.safetensors"])
    if fault == "connection closed mid-body":
        fake_hub.truncate_at["model.safetensors"] = size // 3
    else:
        fake_hub.advertised_size["model.safetensors"] = size + 1000
    with pytest.raises(HubError, match="transfer of model.safetensors from .* was interrupted or incomplete"):
        hub.fetch_checkpoint(REPO, progress=False)
    assert_nothing_trusted()
    assert not cache_files("blobs")
    fake_hub.truncate_at.clear()
    fake_hub.advertised_size.clear()
    assert hub.fetch_checkpoint(REPO, progress=False).checkpoint.config == MICRO


def test_a_transfer_cut_once_is_retried_and_verified(fake_hub, checkpoint_files):
    size = len(checkpoint_files["model.safetensors"])
    fake_hub.truncate_once["model.safetensors"] = size // 2
    result = hub.fetch_checkpoint(REPO, progress=False)
    blob_gets = [path for method, path in fake_hub.requests if method == "GET" and path.startswith("/blobs/")]
    assert len(blob_gets) == 2  # cut, then retried (the client resumes with a Range past its 10 MB chunks)
    assert result.sha256 == weights_sha(checkpoint_files)


# -- refusals --------------------------------------------------------------------------------------------------------


def test_missing_repository_revision_and_access(fake_hub, checkpoint_files):
    with pytest.raises(HubError, match="repository lab/nothing was not found"):
        hub.fetch_checkpoint("lab/nothing", progress=False)
    with pytest.raises(HubError, match="has no revision 'v9'"):
        hub.fetch_checkpoint(REPO, revision="v9", progress=False)
    fake_hub.add_repo("lab/gated", checkpoint_files, access="gated")
    with pytest.raises(HubError, match="lab/gated is a gated repository: accept its conditions"):
        hub.fetch_checkpoint("lab/gated", progress=False)
    fake_hub.add_repo("lab/private", checkpoint_files, access="private")
    with pytest.raises(HubError, match="or it is private: log in"):
        hub.fetch_checkpoint("lab/private", progress=False)
    fake_hub.status["model.safetensors"] = 403
    with pytest.raises(HubError, match="403 Forbidden"):
        hub.fetch_checkpoint(REPO, progress=False)
    assert_nothing_trusted()
    assert_nothing_trusted("lab/gated")


def test_repositories_that_are_not_dfpir_checkpoints(fake_hub, checkpoint_files):
    fake_hub.add_repo("lab/bert", {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"x" * 64})
    with pytest.raises(CheckpointError, match="not a dfpir checkpoint: its config.json has no \"format\""):
        hub.fetch_checkpoint("lab/bert", progress=False)
    assert not cache_files("snapshots") and not cache_files("blobs")
    assert not any(path.endswith("model.safetensors") for _, path in fake_hub.requests)  # never downloaded
    fake_hub.add_repo("lab/weights-only", {"model.safetensors": checkpoint_files["model.safetensors"]})
    with pytest.raises(CheckpointError, match="not a dfpir checkpoint: it has no config.json"):
        hub.fetch_checkpoint("lab/weights-only", progress=False)


def test_no_network_and_nothing_cached_fails_fast(monkeypatch, tmp_path):
    point_client_at(monkeypatch, closed_port_endpoint(), tmp_path / "hf")
    start = time.perf_counter()
    with pytest.raises(HubError, match="cannot reach the Hub at http://127.0.0.1:.*not in the local cache"):
        hub.fetch_checkpoint(REPO, progress=False)
    with pytest.raises(HubError, match="cannot reach the Hub"):
        hub.load_from_hub(REPO)
    assert time.perf_counter() - start < 5


def test_offline_with_nothing_cached_makes_no_request(fake_hub, monkeypatch):
    set_offline(monkeypatch)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set and lab/dfpir-micro is not in the local cache"):
        hub.fetch_checkpoint(REPO, progress=False)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        hub.load_from_hub(REPO)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        hub.fetch_clip(progress=False)
    assert not [path for _, path in fake_hub.requests if REPO in path or "timm" in path]


def test_repo_specs():
    assert hub.split_repo_spec("lab/x@v1") == ("lab/x", "v1")
    assert hub.split_repo_spec("lab/x@v1", "v2") == ("lab/x", "v2")
    assert hub.split_repo_spec("lab/x") == ("lab/x", None)
    for bad in ("lab/x/y", "", "lab/--x", "../x"):
        with pytest.raises(InputError, match="not a Hugging Face repository id"):
            hub.split_repo_spec(bad)
    assert hub.looks_like_repo_id("lab/x") and hub.looks_like_repo_id("lab/x@main")
    assert not hub.looks_like_repo_id("./ckpt") and not hub.looks_like_repo_id("model.pth")
    assert not hub.looks_like_repo_id("justaname")


# -- CLIP weights ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("available", [CLIP_FILENAMES, CLIP_FILENAMES[1:]])
def test_fetch_clip_fills_the_cache_open_clip_reads(fake_hub, tmp_path, available):
    save_file({"text_projection": torch.randn(4, 4)}, tmp_path / "clip.safetensors")
    blob = (tmp_path / "clip.safetensors").read_bytes()
    fake_hub.add_repo(CLIP_HF_REPO, {name: blob for name in available} | {"open_clip_config.json": b"{}"})
    assert find_clip_weights() is None
    path = hub.fetch_clip(progress=False)
    assert path == find_clip_weights() and path.name == available[0] and path.read_bytes() == blob
    assert hub.cached_checkpoints() == []  # CLIP is not listed as a dfpir checkpoint
    requested = {path.rsplit("/", 1)[-1] for _, path in fake_hub.requests if "/resolve/" in path}
    assert requested == {available[0]}  # only the one file


# -- publishing --------------------------------------------------------------------------------------------------------


def test_model_card_has_front_matter_tasks_and_eval_table(tmp_path):
    model = DFPIR(PRESETS["tiny"])
    metadata = {"tasks": ["rain", "haze"], "epochs": 3, "license": "mit",
                "eval": {"Rain100L": {"psnr": 30.5, "ssim": 0.91}, "SOTS": {"psnr": 25.25, "ssim": 0.88}}}
    folder = save_checkpoint(tmp_path / "ckpt", model, make_prompts(512, ("rain", "haze")), metadata)
    card = publish.model_card(load_checkpoint(folder), "lab/dfpir-tiny")
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: dfpir" in front and "- dfpir" in front and "- image-deraining" in front
    assert "- image-dehazing" in front and "license: mit" in front and "image-denoising" not in front
    assert "| preset | tiny |" in body
    assert "| dataset | psnr | ssim |" in body and "| Rain100L | 30.50 | 0.9100 |" in body
    assert "| rain | rainy, derain | Rain degradation with rain lines |" in body
    assert "dfpir fetch-weights lab/dfpir-tiny" in body and "| epochs | 3 |" in body
    assert "random codes (no CLIP" in body
    # a prompt's own weights are counted beside the shared network
    own = {"output.weight": model.output.weight.detach()}
    folder = save_checkpoint(tmp_path / "own", model, make_prompts(512, ("rain", "haze")), metadata,
                             prompt_weights={"haze": own})
    card = publish.model_card(load_checkpoint(folder), "lab/dfpir-tiny")
    shared = sum(p.numel() for p in model.parameters())
    assert f"| parameters | {shared:,}; haze: {own['output.weight'].numel():,} more of its own (output) |" in card


def test_push_then_fetch_round_trip(fake_hub, monkeypatch, tmp_path):
    recorder = RecordingApi(fake_hub)
    recorder.install(monkeypatch)
    folder = make_checkpoint(tmp_path / "trained", seed=3)
    before = sorted(path.name for path in folder.iterdir())
    result = publish.push_checkpoint(folder, "me/new", private=True, revision="exp", commit_message="first")
    assert [call[0] for call in recorder.calls] == ["create_repo", "create_branch", "create_commit"]
    assert recorder.calls[0] == ("create_repo", "me/new", True) and recorder.calls[2][2:] == ("exp", "first")
    assert result.revision == "exp" and "/me/new/commit/" in result.commit_url
    assert sorted(path.name for path in folder.iterdir()) == before  # nothing written into the folder
    fetched = hub.fetch_checkpoint("me/new", revision="exp", progress=False)
    assert "library_name: dfpir" in (fetched.path / "README.md").read_text()
    assert (fetched.path / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert json.loads((fetched.path / "config.json").read_text())["weights_sha256"] == fetched.sha256


def test_push_refuses_a_folder_that_does_not_load(fake_hub, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a dfpir checkpoint"):
        publish.push_checkpoint(tmp_path / "empty", "me/new")
    assert not [path for _, path in fake_hub.requests if "me/new" in path]


def test_push_errors_are_translated(fake_hub, monkeypatch, tmp_path):
    folder = make_checkpoint(tmp_path / "trained")
    point_client_at(monkeypatch, closed_port_endpoint(), tmp_path / "hf")
    with pytest.raises(HubError, match="cannot reach the Hub"):
        publish.push_checkpoint(folder, "me/new")
