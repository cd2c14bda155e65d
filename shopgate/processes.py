"""Start child processes and stop exactly those, by pid; and every read of `/proc`.

Used by the local stack runner, the gateway's HAProxy supervision, the tests and the benchmarks:
every process shopgate starts is remembered by pid and stopped by pid (never by name), in its own
process group so that its children go with it. What the kernel says about a process (its command
line, state, group, memory) and about the machine is read here and nowhere else, so the format of
`/proc` is parsed once.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
from signal import SIGTERM  # the method ManagedProcess.signal shadows the module in the class body
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests


LISTEN_PORTS_FROM = 20000   # the lowest port free_port hands out: above the usual fixed services' ports


def ephemeral_port_start() -> int:
    """The first port the kernel picks for the local end of outgoing connections (/proc; 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1", udp_too: bool = False, attempts: int = 200) -> int:
    """A port free a moment ago for a server we are about to start (and for UDP as well with `udp_too`).

    Chosen below the kernel's ephemeral range: a port the kernel chose (bind to port 0) can be taken by
    any outgoing connection before the server binds it — a keep-alive to the catalog held one for
    seconds and a service failed with "Address already in use". Never the same port twice per process.
    """
    ports = range(LISTEN_PORTS_FROM, max(ephemeral_port_start(), LISTEN_PORTS_FROM + 1000))
    for _ in range(attempts):
        port = random.choice(ports)
        if port in _handed_out:
            continue
        kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp_too else (socket.SOCK_STREAM,)
        try:
            for kind in kinds:
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise OSError(f"no port on {host} between {ports.start} and {ports.stop - 1} was free after {attempts} attempts")


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
    """The last lines of a log, for the error that says why a process died ("" when there is no log).

    Read from the end (at most 1 KiB a line): a request log may be many megabytes."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as log_file:
            log_file.seek(max(0, os.fstat(log_file.fileno()).st_size - lines * 1024))
            text = log_file.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


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


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first, process group third);
    None when the process is gone. The name may hold spaces and parentheses: split at the last ")"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] == "Z"


_SYS_PIDFD_GETFD = 438   # the same number on every Linux architecture (5.6+)


def shared_descriptor(pid: int, fd: int) -> int:
    """A descriptor of this process for the open file description `pid` has as `fd` (pidfd_getfd): same
    file offset and status flags, shared. OSError when the kernel refuses (ptrace rules: e.g. a
    non-root user's process that is not our descendant under Yama ptrace_scope 1) or lacks the call."""
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        got = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"pidfd_getfd(pid {pid}, fd {fd}): {os.strerror(error)}")
        return got
    finally:
        os.close(pidfd)


def process_cmdline(pid: int) -> list[str] | None:
    """The argv a process runs now (None when it is gone; [] for a zombie or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid` — a component's children included."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None \
                and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def processes_matching(match: Callable[[list[str]], bool]) -> dict[int, int]:
    """pid -> parent pid of every live process whose command line satisfies `match` (e.g. the
    HAProxy master and workers of one state dir: the master is the one whose parent is not among them)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (argv := process_cmdline(int(entry.name))) and match(argv) \
                and (fields := _stat_fields(entry.name)) is not None and fields[0] != "Z":
            found[int(entry.name)] = int(fields[1])
    return found


def process_rss_kib(pid: int) -> int | None:
    """The resident set of a process in KiB (VmRSS); None when it is gone or has none."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), None)


def main_thread_schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one) of a process's main thread, from the scheduler's
    own accounting (/proc/<pid>/schedstat, nanoseconds); None when the process is gone or the kernel keeps none.
    The waiting time is what other work on the machine cost it."""
    try:
        on_cpu, waiting = Path(f"/proc/{pid}/schedstat").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def process_open_files(pid: int) -> tuple[int, int | None] | None:
    """(descriptors a process has open, its soft limit "Max open files") from /proc/<pid>/fd and /limits; None
    when it is gone. What HAProxy's reserved descriptors (`show info` Maxsock) leave unused shows here."""
    try:
        count = len(os.listdir(f"/proc/{pid}/fd"))
        limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    except OSError:
        return None
    soft = next((line[len("Max open files"):].split()[0] for line in limits if line.startswith("Max open files")), None)
    return count, int(soft) if soft and soft.isdigit() else None


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used so far, user + system, all its threads (/proc/<pid>/stat); None when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str | None:
    """The machine's CPU model name as the kernel reports it (None where /proc/cpuinfo has none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


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


def wait_for_http(url: str, timeout: float = 15.0, process: ManagedProcess | None = None,
                  ok: Callable[[requests.Response], bool] = lambda r: r.status_code < 500) -> requests.Response:
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
