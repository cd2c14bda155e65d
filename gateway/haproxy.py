"""The running HAProxy: one master-worker process in the foreground, and the sockets that steer it.

    HAProxyProcess   `haproxy -W -S <master.sock> -p <pidfile> -f <cfg>` in its own session (never
                     daemonised: this machine's PID 1 does not reap daemons), started, adopted from a
                     previous controller of the same state dir, soft-stopped or stopped, by pid.
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

from shopgate.processes import file_tail, group_members, pid_alive, process_cmdline, shared_descriptor, stop_pid

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


def haproxy_argv(haproxy_bin: str, cfg_path: Path, master_socket: Path, pidfile: Path) -> list[str]:
    """How the controller starts HAProxy: master-worker, master socket, pid file, config — all in one state dir."""
    return [haproxy_bin, "-W", "-S", f"{master_socket},mode,600", "-p", str(pidfile), "-f", str(cfg_path)]


def runs_config(argv: list[str] | None, cfg_path: Path, master_socket: Path) -> bool:
    """True when `argv` is an HAProxy master started for this config and master socket.

    A reload re-executes the master with extra arguments (-sf <old workers>, -x ...), so the test
    is on the `-f` and `-S` values, not the whole line."""
    if not argv:
        return False
    values = {flag: argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag in ("-f", "-S")}
    return values.get("-f") == str(cfg_path) and values.get("-S", "").split(",")[0] == str(master_socket)


def read_pidfile(path: Path) -> int | None:
    """The pid HAProxy wrote with `-p` (its master's), or None when the file is missing or not a pid."""
    try:
        text = path.read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() and int(text[0]) > 1 else None


@dataclass
class HAProxyProcess:
    """HAProxy in master-worker mode, in a session of its own (so it can outlive the controller).

    Either started here (`popen`) or adopted from a previous controller of the same state dir
    (`adopted_pid`): found through the pid file, its command line naming this config and master
    socket, and the master socket answering with that same pid. Anything less is never adopted
    nor signalled."""

    haproxy_bin: str
    cfg_path: Path
    master_socket: Path
    log_path: Path
    pidfile: Path
    popen: subprocess.Popen | None = field(default=None, repr=False)
    adopted_pid: int | None = None
    _log_fd: int | None = field(default=None, repr=False)          # HAProxy's stdout, shared (see log_writer)
    _log_fd_problem: str | None = field(default=None, repr=False)  # why an adopted HAProxy's stdout is not held

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else self.adopted_pid

    @property
    def cli(self) -> MasterCLI:
        return MasterCLI(self.master_socket)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.adopted_pid is not None and self._is_ours(self.adopted_pid)

    def _is_ours(self, pid: int) -> bool:
        return pid_alive(pid) and runs_config(process_cmdline(pid), self.cfg_path, self.master_socket)

    def adopt(self, connect_for: float = 3.0) -> ProcInfo | None:
        """Take over the HAProxy a previous controller left running for this state dir; None when there is none.

        The pid file alone proves nothing (the pid may be reused): the process must run this config
        with this master socket, and that socket's master must say it is that pid."""
        pid = read_pidfile(self.pidfile)
        if pid is None or not pid_alive(pid):
            return None
        if not runs_config(process_cmdline(pid), self.cfg_path, self.master_socket):
            log.warning("pid file %s names pid %s, which is not an HAProxy of this state dir: not adopted", self.pidfile, pid)
            return None
        try:
            info = self.cli.show_proc(connect_for=connect_for)
        except HAProxyError as error:
            log.warning("HAProxy pid %s runs this config but its master socket does not answer (%s): not adopted", pid, error)
            return None
        if info.master_pid != pid or not info.workers:
            log.warning("master socket %s answers for pid %s (workers %s), not pid %s: not adopted",
                        self.master_socket, info.master_pid, info.workers, pid)
            return None
        self.popen, self.adopted_pid = None, pid
        log.info("adopted the running HAProxy: master pid %s, workers %s", pid, list(info.workers))
        try:
            self._close_log()
            self._log_fd = shared_descriptor(pid, 1)
        except OSError as error:
            self._log_fd_problem = f"the adopted HAProxy's stdout (pid {pid}, fd 1) cannot be shared: {error}"
            log.warning("%s; its log is not rotated until HAProxy is restarted", self._log_fd_problem)
        return info

    def log_writer(self) -> int | None:
        """A descriptor of the open file description HAProxy writes its log through, or None when no HAProxy runs.

        HAProxy clears O_APPEND on its stdout (2.6 sets it O_NONBLOCK with F_SETFL on its first log
        line), so a truncation only works if whoever truncates can also restore O_APPEND and move the
        shared file offset: gateway.log_rotation does both through this descriptor. The controller
        keeps the one it started HAProxy with (every restart reuses it), or takes the adopted
        HAProxy's with pidfd_getfd. OSError when an HAProxy runs whose stdout is not held."""
        if self._log_fd is not None:
            return self._log_fd
        if self.pid is not None and self.alive():
            raise OSError(self._log_fd_problem or f"HAProxy pid {self.pid}: its stdout is not held")
        return None

    def _open_log(self) -> int:
        """The descriptor HAProxy's stdout gets: the one held already while it still names the log file."""
        if self._log_fd is not None:
            held, now = os.fstat(self._log_fd), _stat_or_none(self.log_path)
            if now is not None and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                return self._log_fd
            self._close_log()   # the file was moved away or deleted: start a new one
        self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._log_fd_problem = None
        return self._log_fd

    def _close_log(self) -> None:
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    def start(self, timeout: float = 15.0) -> ProcInfo:
        """Start HAProxy on the current config; wait until its master answers and a worker runs.

        Workers outlive a killed master (measured on 2.6) and keep serving the old config: once
        the new HAProxy serves (listeners are SO_REUSEPORT), the previous process group gets
        SIGUSR1, HAProxy's soft stop, so they finish their requests and leave."""
        if self.alive():
            raise HAProxyError(f"HAProxy already running as pid {self.pid}")
        previous_group = self.pid
        self.master_socket.unlink(missing_ok=True)
        self.popen = subprocess.Popen(
            haproxy_argv(self.haproxy_bin, self.cfg_path, self.master_socket, self.pidfile),
            stdin=subprocess.DEVNULL, stdout=self._open_log(), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.adopted_pid = None
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

    @property
    def returncode(self) -> int | None:
        """How a started HAProxy exited (None while it runs, or when it was adopted: not our child)."""
        return self.popen.poll() if self.popen is not None else None

    def reload(self, timeout: float = 15.0) -> ProcInfo:
        """Master-CLI reload; a refused one raises HAProxyError carrying HAProxy's own alerts from its log."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            return self.cli.reload(timeout)
        except HAProxyError as error:
            alerts = [_ALERT_PREFIX.sub("", line) for line in self._log_since(offset).splitlines() if "[ALERT]" in line]
            raise HAProxyError(f"{error}: {' | '.join(alerts)[:800]}" if alerts else str(error)) from error

    def _log_since(self, offset: int) -> str:
        """The log written since `offset` (capped): request lines interleave with the alerts under load.

        An offset beyond the end means the log was truncated since (gateway.log_rotation): all of it is new."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(offset if offset <= os.fstat(log_file.fileno()).st_size else 0)
                return log_file.read(_LOG_READ_LIMIT).decode(errors="replace")
        except OSError:
            return ""

    def soft_stop(self, timeout: float) -> bool:
        """HAProxy's graceful stop (SIGUSR1 to the master): listeners close, in-flight requests finish,
        the master leaves with its last worker. After `timeout` (hard-stop-after plus a margin) the
        group is killed. True when it left by itself."""
        pid = self.pid
        if pid is None or not self.alive():
            return True
        log.info("soft-stopping HAProxy (pid %s): in-flight requests finish, at most %.0fs", pid, timeout)
        graceful = stop_pid(pid, timeout=timeout, signum=signal.SIGUSR1, group=False)
        if graceful:
            _soft_stop_group(pid, self.cfg_path)   # a worker the master no longer waits for
        else:
            stop_pid(pid, timeout=1, group=True)
        self._reap()
        return graceful

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the master's process group (its workers go with it), SIGKILL after `timeout`."""
        if self.pid is not None and self.alive():
            stop_pid(self.pid, timeout=timeout, group=True)
        self._reap()

    def _reap(self) -> None:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, lines: int = 20) -> str:
        return file_tail(self.log_path, lines)


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


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
