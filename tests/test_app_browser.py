"""`dfpir app` in a real browser: Playwright drives headless Chromium (Debian's `chromium` package, which .ci/run
installs) through the page as a user does: upload, restore with a chosen degradation and with auto, compare,
download, and a bad file that is refused while the next upload still works.

Without playwright, gradio or a Chromium these tests skip with the reason; under CI=true they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from app_server import running_app, stop
from conftest import skip_unless_ci
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RAINY = ROOT / "examples" / "rainy" / "motorcycle.png"
CHROMIUM_ENV = "DFPIR_CHROMIUM"  # a Chromium to drive, when it is not on PATH as chromium
RESTORE_TIMEOUT_MS = 60_000
WAIT_MS = 10_000  # for the page to show what the server sent


def _chromium() -> str:
    """The Chromium to drive; skips (fails under CI=true) when it or the Python packages are missing."""
    missing = [name for name in ("playwright", "gradio") if importlib.util.find_spec(name) is None]
    executable = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        missing.append(f"Chromium (apt-get install chromium, or set ${CHROMIUM_ENV})")
    if missing:
        skip_unless_ci(f"the browser test needs {', '.join(missing)}: pip install -e \".[test]\" and Debian's chromium")
    return executable


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with running_app(tmp_path_factory.mktemp("app")) as app, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        tab.goto(app.url)
        tab.wait_for_selector("#restore", timeout=RESTORE_TIMEOUT_MS)
        yield tab
        browser.close()
        code, stdout, stderr = stop(app)
        assert code == 0 and "Traceback" not in stdout + stderr, (stdout, stderr)


def _restore(page, photos: list[Path], degradation: str) -> float:
    """Upload ``photos``, choose ``degradation``, click Restore and wait until the page says it is done; seconds."""
    clear = page.locator("#photos button[aria-label='Clear']")
    if clear.count():  # the last run's uploads: a new upload would add to them
        clear.first.click()
    page.locator("#photos input[type=file]").set_input_files([str(photo) for photo in photos])
    page.locator("#degradation input").click()
    page.get_by_role("option", name=degradation, exact=True).click()
    run = int(re.match(r"Run (\d+):", page.locator("#status").inner_text() or "Run 0:").group(1)) + 1
    started = time.perf_counter()
    page.locator("#restore").click()
    page.wait_for_function("text => document.querySelector('#status').innerText.startsWith(text)"
                           " && !document.querySelector('#status').innerText.includes('restoring')",
                           arg=f"Run {run}:", timeout=RESTORE_TIMEOUT_MS)
    return time.perf_counter() - started


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _download(page, selector: str, folder: Path) -> Path:
    with page.expect_download() as download:
        page.locator(selector).click()
    target = folder / download.value.suggested_filename
    download.value.save_as(target)
    return target


def _compare(page, index: int) -> None:
    """The before/after slider of photo ``index`` shows two images."""
    expect(page.locator(f"#compare-{index} img")).to_have_count(2, timeout=WAIT_MS)


def test_restore_a_photo_with_a_chosen_degradation_and_download_it(page, tmp_path):
    _restore(page, [RAINY], "rain")
    expect(page.locator("#status")).to_contain_text(": 1 of 1 photos restored")
    expect(page.locator("#result-0")).to_contain_text("motorcycle.png (384x259): restored with rain", timeout=WAIT_MS)
    _compare(page, 0)
    restored = _download(page, "#download-0", tmp_path)
    assert restored.name == "motorcycle_restored.png"
    with Image.open(restored) as image, Image.open(RAINY) as source:
        assert image.size == source.size and image.format == "PNG"


def test_auto_shows_the_detection_and_its_confidence(page, tmp_path):
    _restore(page, [RAINY], "auto")
    expect(page.locator("#result-0")).to_contain_text(re.compile(r"Detected rain with confidence \d+%"), timeout=WAIT_MS)
    _compare(page, 0)
    assert _download(page, "#download-all", tmp_path).suffix == ".zip"


def test_a_bad_file_is_refused_in_the_page_and_the_next_upload_works(page, tmp_path):
    bad = tmp_path / "animation.gif"
    Image.open(RAINY).convert("RGB").save(bad)
    _restore(page, [bad], "rain")
    expect(page.locator("#status")).to_contain_text(": 0 of 1 photos restored, 1 refused")
    expect(page.locator("#result-0")).to_contain_text("animation.gif: refused. animation.gif is a GIF image",
                                                      timeout=WAIT_MS)
    assert not page.locator("#compare-0").count()
    _restore(page, [RAINY], "rain")
    expect(page.locator("#status")).to_contain_text(": 1 of 1 photos restored")
    expect(page.locator("#result-0")).to_contain_text("motorcycle.png", timeout=WAIT_MS)
    _compare(page, 0)
