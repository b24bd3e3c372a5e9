"""Start the real ``dfpir app`` in a subprocess for a test, and stop it as a user does (Ctrl+C)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_process import DFPIR, LineReader, free_port, kill_group, start

START_TIMEOUT = 120  # loading torch, gradio and the default model on a busy 2-core CPU
STOP_TIMEOUT = 30


@dataclass
class AppProcess:
    process: subprocess.Popen
    output: LineReader  # its stdout
    url: str
    tmp: Path  # the TMPDIR it runs with: its workspace lives here while it runs


@contextmanager
def running_app(tmp_path: Path, *args: str) -> Iterator[AppProcess]:
    """``dfpir app`` on a free port of 127.0.0.1, its TMPDIR under ``tmp_path``; killed if the test leaves it running."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    process = start([*DFPIR, "app", "--port", str(free_port()), "--device", "cpu", *args], tmp_path, TMPDIR=str(tmp))
    try:
        output = LineReader(process)
        url = output.wait_for(r"open (http://127\.0\.0\.1:\d+/?) in your browser", START_TIMEOUT).group(1)
        yield AppProcess(process, output, url, tmp)
    finally:
        kill_group(process)


def stop(app: AppProcess, how: signal.Signals = signal.SIGINT) -> tuple[int, str, str]:
    """Send ``how`` and wait for the app to exit; its exit code, stdout and stderr."""
    app.process.send_signal(how)
    try:
        app.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(app.process)
        pytest.fail(f"dfpir app did not stop within {STOP_TIMEOUT} s of {how.name}", pytrace=False)
    stderr = app.process.stderr.read() if app.process.stderr else ""
    return app.process.returncode, app.output.text(), stderr
