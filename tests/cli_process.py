"""Run the real ``dfpir`` command line in a subprocess, as users do, with a deadline: a hang fails the test.

A hung command is killed with its whole process group (data-loading workers, torchrun's ranks), and the
test fails naming the command, the deadline and the output so far, so CI says "hang" within minutes.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DFPIR = [sys.executable, "-m", "dfpir_cli"]  # the package's own entry: this checkout's code, whatever is installed
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a test run under torchrun must not make its subprocesses ranks
    return env


def start(command: Sequence[str | Path], cwd: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(part) for part in command], cwd=cwd, env=cli_env(**extra), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; elsewhere none): torchrun starts its ranks in new sessions."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process, its process group and every process below it."""
    for pid in _descendants(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(command: Sequence[str | Path], cwd: Path, timeout: float, expect: int | None = 0,
        **extra: str) -> subprocess.CompletedProcess:
    """Run ``command`` to its end within ``timeout`` seconds; fail the test on a hang or another exit code."""
    process = start(command, cwd, **extra)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        stdout, stderr = process.communicate()
        pytest.fail(f"HANG: {' '.join(map(str, command))} did not finish in {timeout:.0f} s and was killed\n"
                    f"--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}", pytrace=False)
    finally:
        kill_group(process)  # nothing of it (workers, ranks) outlives the test
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if expect is not None:
        assert result.returncode == expect, (f"{' '.join(map(str, command))} exited {result.returncode}\n"
                                             f"--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}")
    return result


def free_port() -> int:
    """A port nothing listens on now (the OS's choice), for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LineReader:
    """Reads a process's stdout in a thread, so a test can wait for one line and still get all of it later."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process, self.lines, self._queue = process, [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """The first line matching ``pattern``; fail the test (and kill the process) on a deadline or its exit."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if match := re.search(pattern, line):
                return match
        kill_group(self.process)
        stderr = self.process.stderr.read() if self.process.stderr else ""
        pytest.fail(f"{' '.join(map(str, self.process.args))} printed no line matching {pattern!r} in {timeout:.0f} s"
                    f"\n--- stdout\n{''.join(self.lines)[-3000:]}\n--- stderr\n{stderr[-3000:]}", pytrace=False)

    def text(self) -> str:
        """Everything it printed, once it has exited."""
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return "".join(self.lines)
