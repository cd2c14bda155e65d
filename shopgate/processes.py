"""Start child processes and stop exactly those, by pid.

Used by the local stack runner and by the tests: every process shopgate
starts is remembered by pid and stopped by pid (never by name), in its own
process group so that its children go with it.
"""

from __future__ import annotations

import os
import signal
from signal import SIGTERM  # the method ManagedProcess.signal shadows the module in the class body
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def shopgate_argv(*args: str) -> list[str]:
    """argv that runs `shopgate ARGS` with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "shopgate", *args]


@dataclass
class ManagedProcess:
    """A child we started: its pid, its log file, and how to stop it."""

    name: str
    argv: list[str]
    log_path: Path | None = None
    env: dict[str, str] | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def start(self) -> "ManagedProcess":
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,  # own process group: stop() takes its children too
            )
        finally:
            if self.log_path:
                out.close()
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.killpg(self.pid, signum)

    def stop(self, timeout: float = 10.0, signum: int = SIGTERM) -> int | None:
        """Ask politely, wait, then SIGKILL the process group. Returns the exit code."""
        if self.popen is None:
            return None
        if self.alive():
            stop_pid(self.pid, timeout=timeout, signum=signum, group=True)
        try:
            return self.popen.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 40) -> str:
        return file_tail(self.log_path, lines)


def file_tail(path: Path | None, lines: int) -> str:
    """The last lines of a log, for the error that says why a process died ("" when there is no log)."""
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def stop_pid(pid: int, timeout: float = 10.0, signum: int = signal.SIGTERM, group: bool = False) -> bool:
    """Send `signum` to pid (or its process group), wait up to `timeout`, then SIGKILL. True if it is gone."""
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signum)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    try:
        kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    return not pid_alive(pid)


def wait_for_http(url: str, timeout: float = 15.0, process: ManagedProcess | None = None, ok=lambda r: r.status_code < 500) -> requests.Response:
    """Poll `url` until `ok(response)`; fail early with the log tail if `process` died."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode} before {url} answered:\n{process.log_tail()}")
        try:
            response = requests.get(url, timeout=2)
            if ok(response):
                return response
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.1)
    tail = f"\n{process.log_tail()}" if process is not None else ""
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}{tail}")
