"""`dfpir fetch-weights official:NAME` against local stand-ins for Google Drive (gdown) and the Hub (CLIP).

The Drive folder serves a reference-format checkpoint made from the fixture model; the Hub serves a CLIP
weights file. The CLIP text tower is a randomly initialised open_clip ViT-B-32 (the OpenAI weights need
the network): ClipTextEncoder.load is replaced, the download and the lookup of its file are real.
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest
import torch
from conftest import (
    PUBLISHED_FIVE_TASK,
    PUBLISHED_THREE_TASK_SIMPLE,
    published_checkpoint_bytes,
    reference_checkpoint_bytes,
)
from drive_server import FakeDrive
from hub_server import FakeHub, closed_port_endpoint, point_client_at
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from dfpir_cli.cli import app
from dfpir_cli.errors import CheckpointError
from dfpir_cli.weights import official
from dfpir_cli.weights.checkpoint import LEGACY_KEYS, load_checkpoint
from dfpir_cli.weights.official import OFFICIAL, DriveError, DriveFile, fits, pick_file, read_file_name
from dfpir_cli.weights.prompts import CLIP_HF_REPO, FIVE_TASK, THREE_TASK, vocabulary
from dfpir_cli.weights.resolve import resolve_weights

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def reference_bytes(reference_tiny) -> bytes:
    return reference_checkpoint_bytes(reference_tiny[1])


@pytest.fixture
def stand_ins(monkeypatch, tmp_path, reference_bytes, clip_loads):
    """Drive with the authors' three files (3-task ones in a sub-folder), the Hub with CLIP, dfpir's cache empty."""
    hub = FakeHub()
    point_client_at(monkeypatch, hub.start(), tmp_path / "hf")
    save_file({"text_projection": torch.randn(4, 4)}, tmp_path / "clip.safetensors")
    hub.add_repo(CLIP_HF_REPO, {"open_clip_model.safetensors": (tmp_path / "clip.safetensors").read_bytes()})
    drive = FakeDrive(official.DRIVE_FOLDER_ID)
    drive.five = drive.add_file("DFPIR-5D.pth.tar", reference_bytes)
    three = drive.add_folder("3D")
    drive.three = drive.add_file("DFPIR-3D-detail.pth.tar", reference_bytes, three)
    drive.simple = drive.add_file("DFPIR-3D-simple.pth.tar", reference_bytes, three)
    drive.add_file("README.txt", b"weights of the paper")
    monkeypatch.setenv(official.DRIVE_ENDPOINT_ENV, drive.start())
    monkeypatch.setenv("DFPIR_CACHE", str(tmp_path / "dfpir"))
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    yield drive, hub
    drive.stop()
    hub.stop()


def leftovers() -> list[str]:
    root = official.official_root()
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


def test_fetch_converts_records_provenance_and_works_offline(stand_ins, reference_tiny, reference_bytes, random_clip,
                                                             clip_loads, monkeypatch, tmp_path):
    drive, hub = stand_ins
    config, tensors = reference_tiny
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--quiet"])
    assert result.exit_code == 0, result.output
    folder = official.official_dir("five-task")
    assert "--weights official:five-task" in flat(result.output) and str(folder) in flat(result.output)
    assert leftovers() == ["five-task"]  # no staging folder or partial file left
    # CLIP came from the Hub into its cache, and the encoder was built from that file
    assert any("open_clip_model.safetensors" in path for _, path in hub.requests)
    assert clip_loads and clip_loads[0].name == "open_clip_model.safetensors"
    provenance = json.loads((folder / "config.json").read_text())["metadata"]["provenance"]
    assert provenance["source_url"] == f"https://drive.google.com/file/d/{drive.five}/view"
    assert provenance["file_name"] == "DFPIR-5D.pth.tar" and provenance["size"] == len(reference_bytes)
    assert provenance["sha256"] == hashlib.sha256(reference_bytes).hexdigest()
    assert provenance["folder_url"] == official.DRIVE_FOLDER_URL
    # only the 5-task file was downloaded
    downloads = [path for path in drive.requests if "confirm=t" in path]
    assert len(downloads) == 1 and drive.five in downloads[0]

    # offline from now on: neither Drive nor the Hub can be reached
    monkeypatch.setenv(official.DRIVE_ENDPOINT_ENV, closed_port_endpoint())
    point_client_at(monkeypatch, closed_port_endpoint(), tmp_path / "hf-gone")
    checkpoint = resolve_weights("official:five-task")
    assert checkpoint.config == config and checkpoint.prompts.names == FIVE_TASK
    torch.testing.assert_close(checkpoint.prompts.codes, random_clip.encode(list(vocabulary("five-task").values())),
                               rtol=0, atol=0)
    with torch.inference_mode():
        restored = checkpoint.model(tensors["io.input"], tensors["io.text_code"])
    assert (restored - tensors["io.output"]).abs().max() <= 1e-4

    listed = runner.invoke(app, ["fetch-weights", "--list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)["official"]}
    assert rows["official:five-task"]["cached"] and not rows["official:three-task"]["cached"]
    assert rows["official:five-task"]["sha256"] == provenance["sha256"]
    table = runner.invoke(app, ["fetch-weights", "--list"])
    assert "dfpir fetch-weights official:three-task-simple" in flat(table.output)

    described = runner.invoke(app, ["info", "official:five-task"])
    assert described.exit_code == 0 and provenance["sha256"][:20] in described.output  # the table may wrap it

    again = runner.invoke(app, ["fetch-weights", "official:five-task"])
    assert again.exit_code == 0 and "already in the cache" in flat(again.output)


def test_three_task_files_are_found_in_a_sub_folder(stand_ins, reference_bytes):
    drive, _ = stand_ins
    result = runner.invoke(app, ["fetch-weights", "official:three-task-simple", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["file_name"] == "3D/DFPIR-3D-simple.pth.tar" and drive.simple in summary["source_url"]
    prompts = load_checkpoint(official.official_dir("three-task-simple")).prompts
    assert prompts.names == THREE_TASK and prompts.texts == ("Noise", "Noise", "Noise", "Rain", "Haze")


def test_not_cached_names_the_fetch_command_and_downloads_nothing(stand_ins, tmp_path):
    drive, _ = stand_ins
    with pytest.raises(CheckpointError, match="`dfpir fetch-weights official:three-task`"):
        resolve_weights("official:three-task")
    Image.new("RGB", (16, 16)).save(tmp_path / "photo.png")
    result = runner.invoke(app, ["restore", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"),
                                 "--weights", "official:five-task", "--degradation", "rain"])
    assert result.exit_code == 2 and "dfpir fetch-weights official:five-task" in flat(result.output)
    assert drive.requests == []


def test_quota_exceeded_gives_the_manual_route(stand_ins):
    drive, _ = stand_ins
    drive.quota.add(drive.five)
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--quiet"])
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert "download quota for this file is exceeded" in text
    assert "dfpir fetch-weights --import-official FILE --prompts five-task --output DIR" in text
    assert official.DRIVE_FOLDER_URL in text and "Traceback" not in result.output
    assert leftovers() == []


def test_truncated_download_leaves_nothing(stand_ins, reference_bytes):
    drive, _ = stand_ins
    drive.truncate_at[drive.five] = len(reference_bytes) // 2
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "cut short" in flat(result.output) and "Nothing was kept" in flat(result.output)
    assert leftovers() == []
    assert sum("confirm=t" in path for path in drive.requests) == 3  # gdown resumed twice, then gave up


def test_no_network(stand_ins, monkeypatch):
    monkeypatch.setenv(official.DRIVE_ENDPOINT_ENV, closed_port_endpoint())
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--quiet"])
    assert result.exit_code == 2
    assert "cannot reach Google Drive" in flat(result.output) and "--import-official FILE" in flat(result.output)
    assert leftovers() == []


def test_clip_unavailable_stops_before_the_download(stand_ins, monkeypatch, tmp_path):
    drive, _ = stand_ins
    point_client_at(monkeypatch, closed_port_endpoint(), tmp_path / "hf-empty")
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--quiet"])
    assert result.exit_code == 2
    text = flat(result.output)
    assert "CLIP ViT-B/32 (OpenAI) is needed" in text and "dfpir fetch-weights --clip" in text
    assert not any("confirm=t" in path or "download" in path for path in drive.requests)
    assert leftovers() == []


def test_empty_checkpoint_is_refused(stand_ins):
    drive, _ = stand_ins
    buffer = io.BytesIO()
    torch.save({}, buffer)
    drive.files[drive.five] = ("DFPIR-5D.pth.tar", buffer.getvalue())
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--quiet"])
    assert result.exit_code == 2
    text = flat(result.output)
    assert "DFPIR-5D.pth.tar from the authors' folder cannot be used" in text and "empty checkpoint ({})" in text
    assert leftovers() == []


@pytest.mark.parametrize(("names", "expected"), [
    (["DFPIR_5D.pth.tar", "DFPIR_3D_detail.pth.tar", "DFPIR_3D_simple.pth.tar"],
     {"five-task": "DFPIR_5D.pth.tar", "three-task": "DFPIR_3D_detail.pth.tar",
      "three-task-simple": "DFPIR_3D_simple.pth.tar"}),
    (["five/model.pth", "three detailed prompts/model.pth", "three simple prompts/model.pth", "notes.md"],
     {"five-task": "five/model.pth", "three-task": "three detailed prompts/model.pth",
      "three-task-simple": "three simple prompts/model.pth"}),
])
def test_files_are_picked_by_name(names, expected):
    files = [DriveFile(f"id{index}", name) for index, name in enumerate(names)]
    assert {name: pick_file(model, files).path for name, model in OFFICIAL.items()} == expected


def test_ambiguous_folder_is_refused_with_its_listing():
    files = [DriveFile("a", "DFPIR-5D-epoch80.pth.tar"), DriveFile("b", "DFPIR-5D-epoch85.pth.tar")]
    with pytest.raises(DriveError, match="2 files in the authors' folder") as error:
        pick_file(OFFICIAL["five-task"], files)
    assert "DFPIR-5D-epoch85.pth.tar" in str(error.value) and "--import-official" in str(error.value)
    with pytest.raises(DriveError, match="no file"):
        pick_file(OFFICIAL["three-task"], files)


# ---------------------------------------------------------------------------------------------------------------
# The authors' folder as published: files named by their validation scores, 12 obsolete scalars in the 5-task file


@pytest.fixture
def published(stand_ins, reference_tiny):
    """The Drive folder holding the two files whose published names are known (5D, and 3D with simple prompts)."""
    drive, _ = stand_ins
    drive.files.clear()
    drive.subfolders.clear()
    data = published_checkpoint_bytes(*reference_tiny)
    drive.five = drive.add_file(PUBLISHED_FIVE_TASK, data)
    drive.simple = drive.add_file(PUBLISHED_THREE_TASK_SIMPLE, data)
    return drive, data


def test_published_file_fetches_restores_and_evaluates(published, reference_tiny, tmp_path):
    drive, data = published
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "dropped: 12 obsolete scalars" in flat(result.output)
    provenance = load_checkpoint(official.official_dir("five-task")).metadata["provenance"]
    assert provenance["file_name"] == PUBLISHED_FIVE_TASK and provenance["dropped_keys"] == sorted(LEGACY_KEYS)
    assert provenance["sha256"] == hashlib.sha256(data).hexdigest()
    assert provenance["chosen_by"] == "its name (5 tasks; validation mean 30.64 dB)"
    downloads = [path for path in drive.requests if "confirm=t" in path]
    assert len(downloads) == 1 and drive.five in downloads[0]
    described = runner.invoke(app, ["info", "official:five-task"], terminal_width=200)
    assert "provenance: dropped_keys" in described.output and "latent_shuffle_channel.select_attn.attn3" in \
        described.output

    Image.new("RGB", (40, 36), (120, 90, 60)).save(tmp_path / "photo.png")
    restored = runner.invoke(app, ["restore", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"),
                                   "-w", "official:five-task", "-d", "rain", "--device", "cpu", "--json"])
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["processed"] == 1
    with Image.open(tmp_path / "out" / "photo.png") as image:
        assert image.size == (40, 36)

    scored = runner.invoke(app, ["eval", "-d", "synthetic", "--size", "32", "-g", "rain", "-g", "lowlight",
                                 "-w", "official:five-task", "--device", "cpu", "--json"])
    assert scored.exit_code == 0, scored.output
    sets = json.loads(scored.stdout)["sets"]
    assert [entry["label"] for entry in sets] == ["synthetic rain", "synthetic lowlight"]
    assert all(entry["images"] > 0 and entry["psnr"] > 0 for entry in sets)


def test_published_three_task_names(published):
    drive, _ = published
    result = runner.invoke(app, ["fetch-weights", "official:three-task-simple", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["file_name"] == PUBLISHED_THREE_TASK_SIMPLE
    assert load_checkpoint(official.official_dir("three-task-simple")).prompts.texts[-1] == "Haze"

    # the detailed-prompt 3-task file is not in this folder: the SP file is not taken for it
    result = runner.invoke(app, ["fetch-weights", "official:three-task", "--quiet"])
    assert result.exit_code == 2
    text = flat(result.output)
    assert "no file in the authors' folder" in text and "dfpir fetch-weights official:three-task --file NAME" in text
    assert f"{PUBLISHED_THREE_TASK_SIMPLE} (3 tasks; simple prompts; validation mean 32.86 dB)" in text
    result = runner.invoke(app, ["fetch-weights", "official:three-task", "--file", PUBLISHED_THREE_TASK_SIMPLE])
    assert result.exit_code == 2
    assert "its name says 3 tasks; simple prompts" in flat(result.output)
    assert "It looks like official:three-task-simple" in flat(result.output)
    assert not official.is_cached("three-task")


def test_several_that_fit_are_listed_and_one_is_picked_by_name(stand_ins, reference_bytes):
    drive, _ = stand_ins
    drive.files.clear()
    drive.subfolders.clear()
    drive.add_file("DFPIR-5D-epoch80.pth.tar", reference_bytes)
    later = drive.add_file("DFPIR-5D-epoch120.pth.tar", reference_bytes)
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--quiet"])
    assert result.exit_code == 2
    assert "2 files in the authors' folder" in flat(result.output) and "--file NAME" in flat(result.output)
    assert leftovers() == []
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--quiet", "--json",
                                 "--file", "DFPIR-5D-epoch120.pth.tar"])
    assert result.exit_code == 0, result.output
    assert later in json.loads(result.stdout)["source_url"]
    provenance = load_checkpoint(official.official_dir("five-task")).metadata["provenance"]
    assert provenance["chosen_by"] == "--file DFPIR-5D-epoch120.pth.tar" and "dropped_keys" not in provenance
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--file", "nope.pth"])
    assert result.exit_code == 0 and "already in the cache" in flat(result.output)  # cached: --force to replace
    result = runner.invoke(app, ["fetch-weights", "official:five-task", "--force", "--file", "nope.pth"])
    assert result.exit_code == 2 and "--file: no file named 'nope.pth'" in flat(result.output)
    result = runner.invoke(app, ["fetch-weights", "owner/name", "--file", "x.pth"])
    assert result.exit_code == 2 and "--file goes with official:NAME" in flat(result.output)


@pytest.mark.parametrize(("path", "models"), [
    (PUBLISHED_FIVE_TASK, ["five-task"]),
    (PUBLISHED_THREE_TASK_SIMPLE, ["three-task-simple"]),
    (PUBLISHED_THREE_TASK_SIMPLE.replace("-SP", ""), ["three-task"]),  # a 3D file not marked SP: detailed prompts
    (PUBLISHED_THREE_TASK_SIMPLE.replace("-SP", "-DP"), ["three-task"]),
    ("DFPIR_3D_detail.pth.tar", ["three-task"]),
    ("weights/model_5task_final.pth", ["five-task"]),
    # the scores alone say which model it is
    ("pn31.29-0.8889_pr37.62-0.9779_ph31.64-0.9794_pb28.82-0.8734_pl23.82-0.8428_avr30.64-0.9125.pth.tar",
     ["five-task"]),
    # names that contradict themselves fit nothing
    (PUBLISHED_FIVE_TASK.replace("5D", "3D"), []),  # 3D, but blur and low-light scores
    (PUBLISHED_FIVE_TASK.replace("avr30.64", "avr33.10"), []),  # the mean is not the scores' mean
    ("DFPIR-5D-SP.pth.tar", []),  # the 5-task model has no one-word prompts
    ("DFPIR.pth.tar", []),
])
def test_file_name_rules(path, models):
    assert [name for name, model in OFFICIAL.items() if fits(model, read_file_name(path))] == models


def test_file_name_scores_are_read():
    five = read_file_name(PUBLISHED_FIVE_TASK)
    assert five.scores == {"noise": (31.29,), "rain": (37.62,), "haze": (31.64,), "blur": (28.82,),
                           "lowlight": (23.82,)}
    assert five.average == 30.64 and five.tasks == 5 and five.prompts is None
    three = read_file_name(PUBLISHED_THREE_TASK_SIMPLE)
    assert three.scores == {"noise": (34.12, 31.45, 28.18), "rain": (38.63,), "haze": (31.93,)}
    assert three.average == 32.86 and three.tasks == 3 and three.prompts == "simple"
