"""A real `shopgate up` stack for tests: free ports, a tmp state dir, every process accounted for.

Tests drive the stack through the `shopgate` command itself (subprocesses), and read back what it
did from its manifest and from /proc. Teardown runs `shopgate down` and then SIGKILLs any process
group of this stack that survived it — by pid, and only processes whose command line names this
stack's state dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from shopgate.processes import free_port, group_members, pid_alive, process_cmdline, shopgate_argv
from shopgate.tool.manifest import Manifest, Ports


class StackUnderTest:
    def __init__(self, tmp_path: Path):
        self.state_dir = tmp_path / "stack"
        self.ports = Ports(free_port(), free_port(), free_port(), free_port(), free_port())
        self.seen_groups: set[int] = set()

    def port_args(self) -> list[str]:
        return ["--catalog-port", str(self.ports.catalog), "--gateway-port", str(self.ports.gateway),
                "--stats-port", str(self.ports.stats), "--status-port", str(self.ports.status),
                "--https-port", str(self.ports.https)]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`shopgate ARGS --state-dir <this stack>`; its output is kept for assertions."""
        result = subprocess.run(shopgate_argv(*args, "--state-dir", str(self.state_dir)),
                                capture_output=True, text=True, timeout=timeout)
        self.remember()
        return result

    def up(self, instances: int = 2) -> subprocess.CompletedProcess:
        result = self.run("up", "--detach", "--instances", str(instances), *self.port_args())
        assert result.returncode == 0, f"shopgate up failed:\n{result.stdout}\n{result.stderr}"
        return result

    def manifest(self) -> Manifest | None:
        return Manifest.load(self.state_dir)

    def remember(self) -> None:
        manifest = self.manifest()
        if manifest is not None:
            self.seen_groups |= {p.pid for p in manifest.processes}

    def ours(self, pid: int) -> bool:
        return str(self.state_dir) in " ".join(process_cmdline(pid) or [])

    def live_pids(self) -> set[int]:
        """Every live process of this stack ever seen: the components and all their children."""
        pids = {pid for pgid in self.seen_groups for pid in group_members(pgid)}
        pids |= {pgid for pgid in self.seen_groups if pid_alive(pgid)}
        return {pid for pid in pids if self.ours(pid)}

    def cleanup(self) -> None:
        if self.manifest() is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run("down", timeout=90)
        for pgid in self.seen_groups:
            if any(self.ours(pid) for pid in group_members(pgid)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
