"""The running HAProxy: one master-worker process in the foreground, and the sockets that steer it.

    HAProxyProcess   `haproxy -W -S <master.sock> -f <cfg>` as our child (never daemonised: this
                     machine's PID 1 does not reap daemons), started and stopped by pid.
    MasterCLI        the master socket: `reload`, `show proc`, and runtime-API commands for the
                     current worker (`@1 <command>`), which keeps working across reloads.
    check_config     `haproxy -c`, returning HAProxy's own error text.

Measured on 2.6: `reload` answers with nothing and the master refuses connections for a moment
while it re-executes, so a reload is confirmed through `show proc` (a new worker pid, the failed
count unchanged), never through the reply.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from shopgate.processes import group_members, process_cmdline, stop_pid

log = logging.getLogger("shopgate.gateway.haproxy")


class HAProxyError(RuntimeError):
    """HAProxy refused a config, a command, or did not come up; the message is HAProxy's own where it has one."""


_ALERT_PREFIX = re.compile(r"^\[ALERT\]\s*\(\d+\)\s*:\s*")
_PARSING_AT = re.compile(r"parsing \[[^\]]*:(\d+)\]")
# How much of the log a refused reload reads for its alerts: request lines (one per request) come between.
_LOG_READ_LIMIT = 4 * 1024 * 1024


def check_config(haproxy_bin: str, cfg_path: Path, timeout: float = 60.0) -> str | None:
    """None when `haproxy -c` accepts the file, else HAProxy's alerts, each with the config line it names."""
    try:
        result = subprocess.run([haproxy_bin, "-c", "-f", str(cfg_path)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"haproxy -c did not finish within {timeout:.0f}s"
    if result.returncode == 0:
        return None
    output = (result.stdout + result.stderr).strip()
    alerts = [_ALERT_PREFIX.sub("", line) for line in output.splitlines() if "ALERT" in line]
    try:
        lines = cfg_path.read_text().splitlines()
    except OSError:
        lines = []
    shown = []
    for alert in alerts or output.splitlines()[-10:]:
        match = _PARSING_AT.search(alert)
        if match and 0 < int(match.group(1)) <= len(lines):
            alert += f" (line: {lines[int(match.group(1)) - 1].strip()!r})"
        shown.append(alert)
    return "\n".join(shown) or f"haproxy -c exited with {result.returncode}"


# ---------------------------------------------------------------- master CLI


@dataclass(frozen=True)
class ProcInfo:
    """`show proc`: the master, its reload counters, and the workers serving now."""

    master_pid: int
    reloads: int
    failed_reloads: int
    workers: tuple[int, ...]          # current workers, newest first
    old_workers: tuple[int, ...] = () # still finishing connections after a reload


_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]")
_WORKER_LINE = re.compile(r"^(\d+)\s+worker\s")
#: First words of the runtime API's refusals (success answers are empty or "IP changed from ...").
_RUNTIME_ERROR = re.compile(r"^(no such|unknown|require|invalid|can't|cannot|failed|error|expects|unsupported|this command|permission)", re.I)


def parse_show_proc(text: str) -> ProcInfo:
    """The master's `show proc` table; the only way to tell that a reload produced a new worker."""
    master = reloads = failed = None
    workers: list[int] = []
    old: list[int] = []
    section = None
    for line in text.splitlines():
        if line.startswith("# workers"):
            section = workers
        elif line.startswith("# old workers"):
            section = old
        elif line.startswith("#"):
            section = None
        elif (match := _MASTER_LINE.match(line)) is not None:
            master, reloads, failed = (int(g) for g in match.groups())
        elif section is not None and (match := _WORKER_LINE.match(line)) is not None:
            section.append(int(match.group(1)))
    if master is None:
        raise HAProxyError(f"unexpected `show proc` answer: {text[:200]!r}")
    return ProcInfo(master, reloads, failed, tuple(workers), tuple(old))


@dataclass
class MasterCLI:
    """Commands over the master socket. Runtime-API commands go to the newest worker with `@1`."""

    path: Path
    timeout: float = 10.0

    def send(self, line: str, connect_for: float = 0.0) -> str:
        """Send one command line, return the whole answer. Retries the connect for `connect_for` seconds."""
        deadline = time.monotonic() + connect_for
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(self.timeout)
                    sock.connect(str(self.path))
                    sock.sendall(line.encode() + b"\n")
                    sock.shutdown(socket.SHUT_WR)
                    chunks = []
                    while chunk := sock.recv(65536):
                        chunks.append(chunk)
                    return b"".join(chunks).decode(errors="replace")
            except (ConnectionRefusedError, FileNotFoundError) as error:
                if time.monotonic() >= deadline:
                    raise HAProxyError(f"master socket {self.path}: {error}") from error
                time.sleep(0.02)
            except OSError as error:
                raise HAProxyError(f"master socket {self.path}: {error}") from error

    def show_proc(self, connect_for: float = 0.0) -> ProcInfo:
        return parse_show_proc(self.send("show proc", connect_for))

    def reload(self, timeout: float = 15.0) -> ProcInfo:
        """Reload and wait for a new worker; HAProxyError if the reload failed or no new worker came."""
        before = self.show_proc(connect_for=2.0)
        self.send("reload")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                after = self.show_proc(connect_for=max(0.0, deadline - time.monotonic()))
            except HAProxyError:
                time.sleep(0.05)
                continue
            if after.failed_reloads > before.failed_reloads:
                raise HAProxyError("HAProxy refused the new configuration on reload (failed reload count went up); the previous worker keeps serving")
            if after.reloads > before.reloads and after.workers and after.workers[0] not in before.workers:
                return after
            time.sleep(0.05)
        raise HAProxyError(f"no new worker within {timeout:.0f}s after reload")

    # ---- runtime API of the current worker

    def run(self, commands: list[str], batch_bytes: int = 8000) -> list[str]:
        """Run runtime-API commands on the newest worker; HAProxyError naming the refused ones.

        Commands travel `;`-joined (one connection per ~8 KB), which costs ~2 ms per batch.
        Returns HAProxy's informational answers (e.g. "IP changed from ...")."""
        notes: list[str] = []
        batch: list[str] = []
        size = 0
        for command in commands:
            if batch and size + len(command) > batch_bytes:
                notes += self._run_batch(batch)
                batch, size = [], 0
            batch.append(command)
            size += len(command) + 6
        if batch:
            notes += self._run_batch(batch)
        return notes

    def _run_batch(self, commands: list[str]) -> list[str]:
        answer = self.send("; ".join(f"@1 {c}" for c in commands), connect_for=2.0)
        lines = [line.strip() for line in answer.splitlines() if line.strip()]
        errors = [line for line in lines if _RUNTIME_ERROR.match(line)]
        if errors:
            raise HAProxyError(f"runtime API refused {'; '.join(commands)[:300]}: {' | '.join(errors)[:300]}")
        return lines

    def run_with_payload(self, command: str, payload: str) -> str:
        """One runtime-API command carrying a multi-line payload (`<command> <<` + lines + an empty
        line), e.g. `set ssl cert`; HAProxyError when refused. The payload must hold no empty line."""
        if "\n\n" in payload.strip("\n") or not payload.strip():
            raise ValueError("a runtime-API payload may not be empty or contain an empty line")
        answer = self.send(f"@1 {command} <<\n{payload.strip(chr(10))}\n", connect_for=2.0)
        errors = [line.strip() for line in answer.splitlines() if _RUNTIME_ERROR.match(line.strip()) or "unable" in line]
        if errors:
            raise HAProxyError(f"runtime API refused {command}: {' | '.join(errors)[:300]}")
        return answer.strip()

    def server_stats(self, backends: list[str] | None = None) -> dict[tuple[str, str], dict[str, str]]:
        """(backend, server) -> `show stat` row of the newest worker, for `backends` (default: all).

        Asking per backend keeps this cheap at 10,000 servers (the full table is ~300 ms of CSV)."""
        scopes = backends if backends is not None else ["-1"]
        if not scopes:
            return {}
        text = self.send("; ".join(f"@1 show stat {scope} 4 -1" for scope in scopes), connect_for=2.0)
        rows: dict[tuple[str, str], dict[str, str]] = {}
        header: list[str] = []
        for line in text.splitlines():
            if line.startswith("# "):
                header = line[2:].split(",")
            elif line and header:
                row = dict(zip(header, line.split(",")))
                if row.get("svname") not in (None, "FRONTEND", "BACKEND"):
                    rows[(row["pxname"], row["svname"])] = row
        return rows


# ---------------------------------------------------------------- the process


@dataclass
class HAProxyProcess:
    """HAProxy in master-worker mode as our foreground child."""

    haproxy_bin: str
    cfg_path: Path
    master_socket: Path
    log_path: Path
    popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def cli(self) -> MasterCLI:
        return MasterCLI(self.master_socket)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, timeout: float = 15.0) -> ProcInfo:
        """Start HAProxy on the current config; wait until its master answers and a worker runs.

        Workers outlive a killed master (measured on 2.6) and keep serving the old config: once
        the new HAProxy serves (listeners are SO_REUSEPORT), the previous process group gets
        SIGUSR1, HAProxy's soft stop, so they finish their requests and leave."""
        if self.alive():
            raise HAProxyError(f"HAProxy already running as pid {self.pid}")
        previous_group = self.popen.pid if self.popen is not None else None
        self.master_socket.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.popen = subprocess.Popen(
                [self.haproxy_bin, "-W", "-S", f"{self.master_socket},mode,600", "-f", str(self.cfg_path)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise HAProxyError(f"HAProxy exited with {self.popen.returncode} at start:\n{self.log_tail()}")
            try:
                info = self.cli.show_proc()
                if info.workers:
                    if previous_group is not None:
                        _soft_stop_group(previous_group, self.cfg_path)
                    return info
            except HAProxyError:
                pass
            time.sleep(0.05)
        self.stop()
        raise HAProxyError(f"HAProxy did not come up within {timeout:.0f}s:\n{self.log_tail()}")

    def reload(self, timeout: float = 15.0) -> ProcInfo:
        """Master-CLI reload; a refused one raises HAProxyError carrying HAProxy's own alerts from its log."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            return self.cli.reload(timeout)
        except HAProxyError as error:
            alerts = [_ALERT_PREFIX.sub("", line) for line in self._log_since(offset).splitlines() if "[ALERT]" in line]
            raise HAProxyError(f"{error}: {' | '.join(alerts)[:800]}" if alerts else str(error)) from error

    def _log_since(self, offset: int) -> str:
        """The log written since `offset` (capped): request lines interleave with the alerts under load."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(offset)
                return log_file.read(_LOG_READ_LIMIT).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the master's process group (its workers go with it), SIGKILL after `timeout`."""
        if self.popen is None:
            return
        if self.alive():
            stop_pid(self.popen.pid, timeout=timeout, group=True)
        try:
            self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _soft_stop_group(group: int, cfg_path: Path) -> None:
    """SIGUSR1 to what is left of a previous HAProxy (its orphaned workers), matched by process
    group AND command line, so a reused pid is never signalled."""
    for pid in group_members(group):
        if str(cfg_path) in " ".join(process_cmdline(pid) or ()):
            log.warning("soft-stopping worker %s left over from the previous HAProxy", pid)
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
