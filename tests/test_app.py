"""`dfpir app`: the service behind the page (restores as `dfpir restore` does, refuses bad photos and goes on,
cleans up), and the real command in a subprocess (starts, serves the page, stops cleanly). The page itself, in a
real browser: tests/test_app_browser.py."""

from __future__ import annotations

import signal
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from app_server import running_app, stop
from cli_process import DFPIR, run
from PIL import Image

from dfpir_cli.api import DFPIRRestorer
from dfpir_cli.app.service import KEEP_REQUESTS, Options, RestoreService, Workspace, zip_results

ROOT = Path(__file__).resolve().parents[1]
RAINY = ROOT / "examples" / "rainy" / "motorcycle.png"


@pytest.fixture(scope="module")
def service():
    workspace = Workspace()
    yield RestoreService(workspace, device="cpu", max_megapixels=1.0)
    workspace.close()


def _photos(folder: Path) -> list[Path]:
    """A JPEG with EXIF, a GIF, a file that is no image, one photo over the 1 MP limit, then a 16-bit PNG."""
    folder.mkdir()
    photo = Image.open(RAINY).convert("RGB").crop((0, 0, 96, 80))
    exif = Image.Exif()
    exif[0x010F] = "dfpir test camera"
    photo.save(folder / "rainy.jpg", quality=92, exif=exif)
    photo.save(folder / "animation.gif")
    (folder / "notes.png").write_text("not an image")
    Image.new("RGB", (1200, 1000)).save(folder / "huge.png")
    sixteen = (np.asarray(photo.convert("L"), np.uint16) * 257)
    Image.fromarray(sixteen).save(folder / "grey16.png")
    return [folder / name for name in ("rainy.jpg", "animation.gif", "notes.png", "huge.png", "grey16.png")]


def test_the_app_writes_what_dfpir_restore_writes_and_refuses_bad_photos_without_stopping(service, tmp_path):
    photos = _photos(tmp_path / "photos")
    before = sorted(path.name for path in (tmp_path / "photos").iterdir())
    progress: list[float] = []
    results = list(service.restore(photos, Options("rain"), lambda fraction, _what: progress.append(fraction)))
    assert [result.name for result in results] == [path.name for path in photos]

    jpeg, gif, notes, huge, grey = results
    assert "GIF" in gif.error and gif.output is None
    assert "not an image" in notes.error and "notes.png" in notes.error and str(tmp_path) not in notes.error
    assert "1200x1000" in huge.error and "--max-megapixels" in huge.error and "dfpir restore" in huge.error
    assert all("refused" in result.describe() for result in (gif, notes, huge))

    # the same bytes `dfpir restore --suffix _restored` writes, format, bit depth and metadata kept
    cli = DFPIRRestorer(device="cpu")
    for result, source in ((jpeg, photos[0]), (grey, photos[4])):
        assert result.output is not None and result.output.name == f"{source.stem}_restored{source.suffix}"
        expected = cli.restore_file(source, tmp_path / "cli" / result.output.name, "rain")
        assert result.output.read_bytes() == expected.read_bytes()
        assert result.restored_with == "rain" and result.detection is None and result.size == (96, 80)
        assert result.output.is_relative_to(service.workspace.root)
    assert Image.open(jpeg.output).getexif()[0x010F] == "dfpir test camera"
    assert Image.open(grey.output).mode == "I;16"
    for preview in (jpeg.before, jpeg.after, grey.after):
        assert preview is not None and Image.open(preview).size == (96, 80)
    assert progress[-1] == 1.0 and progress == sorted(progress)
    assert sorted(path.name for path in (tmp_path / "photos").iterdir()) == before  # nothing next to the inputs

    archive = zip_results(results, tmp_path / "all.zip")
    assert archive is not None
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == ["grey16_restored.png", "rainy_restored.jpg"]
        assert opened.read("rainy_restored.jpg") == jpeg.output.read_bytes()
    assert zip_results([gif], tmp_path / "none.zip") is None
    in_place = zip_results(results)  # the page's: in the request's own folder, deleted with its results
    assert in_place is not None and in_place.parent == jpeg.output.parent.parent and in_place.name == "restored.zip"


def test_auto_mode_shows_the_detection_and_options_share_the_loaded_model(service, tmp_path):
    result, = service.restore([RAINY], Options("auto", self_ensemble=2), lambda *_: None)
    assert result.restored_with == "rain" and result.detection is not None
    assert result.detection.label == "rain"
    text = result.describe()
    assert "Detected **rain** with confidence" in text and "%" in text
    loaded = service.restorer("default")
    assert loaded.with_options(self_ensemble=4).checkpoint.model is loaded.checkpoint.model
    assert service.degradations("default")[:2] == ["auto", "noise15"]
    assert service.weights_choices()[0] == "default"


def test_the_workspace_is_removed_when_the_app_closes():
    workspace = Workspace()
    (workspace.request_folder() / "result.png").write_bytes(b"x")
    workspace.close()
    assert not workspace.root.exists()


def test_the_workspace_keeps_the_results_of_the_last_requests_only():
    workspace = Workspace()
    try:
        folders = [workspace.request_folder() for _ in range(KEEP_REQUESTS + 3)]
        for folder in folders:
            assert folder.parent == workspace.results
        assert [folder.exists() for folder in folders] == [False] * 3 + [True] * KEEP_REQUESTS
    finally:
        workspace.close()


def test_dfpir_app_serves_the_page_and_stops_cleanly(tmp_path):
    for how in (signal.SIGINT, signal.SIGTERM):
        with running_app(tmp_path) as app:
            assert list(app.tmp.glob("dfpir-app-*")), "the workspace lives in the temporary folder"
            with urllib.request.urlopen(app.url, timeout=30) as response:
                assert response.status == 200 and "<html" in response.read().decode()
            with urllib.request.urlopen(app.url.rstrip("/") + "/config", timeout=30) as response:
                assert "dfpir: restore photos" in response.read().decode()  # the page the browser builds
            code, stdout, stderr = stop(app, how)
        assert code == 0, (how, stdout, stderr)
        assert "stopping" in stdout and "Traceback" not in stdout + stderr
        assert not list(app.tmp.glob("dfpir-app-*")), "the workspace is removed when the app stops"


def test_dfpir_app_without_gradio_says_what_to_install(tmp_path):
    hide_gradio = ("import importlib.util, sys; find = importlib.util.find_spec; "
                   "importlib.util.find_spec = lambda name, *a: None if name == 'gradio' else find(name, *a); "
                   "from dfpir_cli.cli import app; sys.argv = ['dfpir', 'app']; app()")
    result = run([sys.executable, "-c", hide_gradio], tmp_path, timeout=120, expect=2)
    assert 'pip install "dfpir-cli[app]"' in result.stderr and "Traceback" not in result.stderr


def test_dfpir_app_help_names_every_option(tmp_path):
    result = run([*DFPIR, "app", "--help"], tmp_path, timeout=120)
    for option in ("--host", "--port", "--weights", "--device", "--max-megapixels", "127.0.0.1"):
        assert option in result.stdout


def test_weights_that_cannot_load_are_refused_in_words(service, tmp_path):
    from dfpir_cli.errors import DfpirError

    with pytest.raises(DfpirError, match="not a checkpoint|no such file"):
        service.degradations(str(tmp_path / "missing"))
