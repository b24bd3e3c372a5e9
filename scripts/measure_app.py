"""Time and peak memory of one restore in `dfpir app` beside `dfpir restore`, and the README's screenshot.

Makes a 1536x1024 (1.6 MP) rainy photo from examples/, restores it with `dfpir restore -d rain` under
/usr/bin/time -v (wall time, peak RSS), then starts `dfpir app`, restores the same photo in headless Chromium
(Playwright) and reports the time from the click to the result and the server's peak RSS (VmHWM) before and after.

    python scripts/measure_app.py [--chromium /usr/bin/chromium] [--screenshot docs/images/app.png]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DFPIR = [sys.executable, "-m", "dfpir_cli"]


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def measure_cli(photo: Path, folder: Path) -> tuple[float, float, float]:
    result = subprocess.run(["/usr/bin/time", "-v", *DFPIR, "restore", str(photo), "-d", "rain", "-o", str(folder),
                             "--device", "cpu", "--json"], capture_output=True, text=True, check=True, cwd=ROOT)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) / 1024
    return seconds, json.loads(result.stdout)["seconds"], rss


def measure_app(photo: Path, chromium: str, screenshot: Path | None) -> dict[str, float]:
    from playwright.sync_api import expect, sync_playwright

    server = subprocess.Popen([*DFPIR, "app", "--device", "cpu"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = next(match.group(1) for line in server.stdout  # type: ignore[union-attr]
                   if (match := re.search(r"open (http://\S+) in your browser", line)))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url)
            page.wait_for_selector("#restore")
            before = peak_rss_mb(server.pid)
            page.locator("#photos input[type=file]").set_input_files(str(photo))
            page.locator("#degradation input").click()
            page.get_by_role("option", name="rain", exact=True).click()
            started = time.perf_counter()
            page.locator("#restore").click()
            expect(page.locator("#compare-0 img")).to_have_count(2, timeout=600_000)
            seconds = time.perf_counter() - started
            after = peak_rss_mb(server.pid)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), type="jpeg", quality=80)
            browser.close()
        return {"seconds": seconds, "rss_before": before, "rss_after": after}
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshot", type=Path, default=None, help="save the page after the restore here (JPEG)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        photo = Path(scratch) / "rainy.png"
        Image.open(ROOT / "examples" / "rainy" / "motorcycle.png").convert("RGB").resize((1536, 1024)).save(photo)
        cli_seconds, cli_restore, cli_rss = measure_cli(photo, Path(scratch) / "out")
        app = measure_app(photo, args.chromium, args.screenshot)
    print("| 1536x1024 PNG, -d rain, CPU | time | peak RSS |\n|---|---|---|")
    print(f"| `dfpir restore` (whole process: start, load, restore, write) | {cli_seconds:.1f} s ({cli_restore:.1f} s "
          f"restoring and writing) | {cli_rss:.0f} MB |")
    print(f"| `dfpir app` (click to result in the page) | {app['seconds']:.1f} s | {app['rss_after']:.0f} MB "
          f"(server; {app['rss_before']:.0f} MB before the restore) |")


if __name__ == "__main__":
    main()
