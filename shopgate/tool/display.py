"""What the operator sees while a command runs and after: progress lines, tables, URLs, ages.

Kept apart from what the commands do so that the lifecycle, the status report and the demo print
the same way, and so that a bench can pass its own stream (stderr) and keep stdout for figures.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Sequence, TextIO

import requests

from shopgate.consul_client import CatalogUnavailable
from shopgate.tool.manifest import ProcessRecord, StackError, ensure_alive


class Progress:
    """A line per component: a spinner while it starts, then ✓ with the elapsed time."""

    SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def done(self, label: str, detail: str = "") -> None:
        self._clear()
        print(f"  ✓ {label:<30} {self.elapsed():5.1f}s  {detail}".rstrip(), file=self.stream, flush=True)

    def wait(self, label: str, probe: Callable[[], tuple[bool, str]], timeout: float,
             watch: Sequence[ProcessRecord] = (), detail: str = "") -> None:
        """Poll `probe` (→ ready, what it saw) until ready; fail with what it saw, or with the log of a process that died."""
        deadline = time.monotonic() + timeout
        seen, tick = "no answer yet", 0
        while True:
            ensure_alive(list(watch))
            try:
                ready, seen = probe()
            except (requests.RequestException, CatalogUnavailable, ValueError, KeyError) as exc:
                ready, seen = False, str(exc)
            if ready:
                self.done(label, detail)
                return
            if time.monotonic() > deadline:
                self._clear()
                raise StackError(f"{label}: not ready after {timeout:.0f}s ({seen})")
            if self.live:
                tick += 1
                self.stream.write(f"\r  {self.SPINNER[tick % len(self.SPINNER)]} {label:<30} {self.elapsed():5.1f}s  {seen[:70]}\033[K")
                self.stream.flush()
            time.sleep(0.1)

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Lines of columns padded to their widest cell, header first (the tables of `status` and `demo`)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]


def format_age(value: object) -> str:
    """Gateway times arrive as epoch seconds or text; show seconds-ago for the former."""
    if isinstance(value, (int, float)) and value > 1e9:
        return f"{time.time() - value:.0f}s ago"
    return "—" if value in (None, "") else str(value)


def print_urls(urls: list[tuple[str, str]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    print("", file=out)
    for label, url in urls:
        print(f"  {label:<18} {url}", file=out)
    print("", file=out, flush=True)
