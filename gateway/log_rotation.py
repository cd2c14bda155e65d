"""Keep `<state-dir>/haproxy.log` bounded: rotate it by copy-then-truncate when it passes a size.

HAProxy writes its request log to its stdout, a file descriptor the controller opened with O_APPEND
when it started HAProxy. HAProxy cannot reopen its stdout, and the same descriptor lives on in
workers that outlive a killed master and in an HAProxy adopted from a previous controller, so
renaming the file would leave them writing into the renamed one forever. Hence logrotate's
`copytruncate`: shift `.1` -> `.2` ... (the oldest, `.keep`, is dropped), copy the live file to `.1`,
truncate the live file to 0.

Plain copytruncate is not enough with HAProxy 2.6: on its first log line it sets its stdout
O_NONBLOCK with F_SETFL, which clears O_APPEND, so after a truncation it would go on writing at its
old offset, leaving a hole of zeros as long as the file was (measured: a 490 KB sparse file and
copies full of zeros). So the rotation is given `writer`, a descriptor of that same open file
description (gateway.haproxy.HAProxyProcess.log_writer): it restores O_APPEND before the copy and
moves the shared offset to the new end after the truncate. HAProxy's next write lands at offset 0.

What can be lost: lines HAProxy writes between the end of the copy and the truncate (the copy
catches up with the file until it stops growing, so the window is one short read and a
truncate). Nothing else: a copy that fails (disk full, permissions) leaves the live file and the
older files as they were, and the live file is only truncated once its copy is complete.

`rotate_if_over` is the core (files only, no clock); `LogRotator` adds the spacing of checks, the
count, and reporting a failure once. It runs in the controller's loop, between two steps, so it
never truncates the log while a reload reads HAProxy's alerts from it by offset.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger("shopgate.gateway.log_rotation")

_COPY_CHUNK = 1024 * 1024


def rotated_path(path: Path, number: int) -> Path:
    """`haproxy.log.<number>`: 1 is the newest older file."""
    return path.with_name(f"{path.name}.{number}")


def rotate_if_over(path: Path, max_bytes: int, keep: int, writer: int | None = None) -> bool:
    """Rotate `path` when it holds more than `max_bytes` (0: never), keeping `keep` older files.

    `writer`: a descriptor sharing the open file description the log is written through (None when
    nothing writes it). True when it rotated; OSError when it could not (nothing is lost then: see
    the module doc). With keep = 0 the live file is only truncated."""
    if max_bytes <= 0:
        return False
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    if writer is not None:
        fcntl.fcntl(writer, fcntl.F_SETFL, fcntl.fcntl(writer, fcntl.F_GETFL) | os.O_APPEND)
    if keep > 0:
        partial = path.with_name(f"{path.name}.copying")
        try:
            _copy_until_quiet(path, partial)
            for number in range(keep - 1, 0, -1):   # .K-1 -> .K first, so nothing is overwritten before it moved
                older = rotated_path(path, number)
                if older.exists():
                    os.replace(older, rotated_path(path, number + 1))
            os.replace(partial, rotated_path(path, 1))
        finally:
            partial.unlink(missing_ok=True)
    os.truncate(path, 0)
    if writer is not None:   # a writer that cleared O_APPEND again meanwhile goes on from here, not from its old offset
        os.lseek(writer, 0, os.SEEK_END)
    return True


def _copy_until_quiet(source: Path, target: Path) -> None:
    """Copy `source` to `target`, then whatever was appended meanwhile, until a read finds nothing new."""
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(_COPY_CHUNK):
            writer.write(chunk)


@dataclass
class LogRotator:
    """`check()` from the controller's loop: at most every `interval` seconds, rotate when over the limit.

    A failure is logged once (path and reason) until a rotation succeeds again; it never raises."""

    path: Path
    max_bytes: int
    keep: int
    interval: float
    writer: Callable[[], int | None] = lambda: None   # HAProxyProcess.log_writer; OSError: cannot rotate safely now
    rotations: int = 0
    last_error: str | None = None
    _next_check: float = 0.0

    def check(self, now: float | None = None) -> bool:
        """True when this call rotated the log."""
        now = time.monotonic() if now is None else now
        if self.max_bytes <= 0 or now < self._next_check:
            return False
        self._next_check = now + self.interval
        try:
            rotated = rotate_if_over(self.path, self.max_bytes, self.keep, self.writer())
        except OSError as error:
            message = f"rotating {self.path} failed: {error}; it keeps growing until a rotation succeeds"
            if message != self.last_error:
                log.error("%s", message)
            self.last_error = message
            return False
        if rotated:
            self.rotations += 1
            self.last_error = None
        return rotated

    def view(self) -> dict:
        """The /status `log` section: where, how big now, the bound, and how often it was rotated."""
        try:
            size = self.path.stat().st_size
        except OSError:
            size = None
        return {"path": str(self.path), "bytes": size, "max_bytes": self.max_bytes, "keep": self.keep,
                "rotations": self.rotations, "last_error": self.last_error}
