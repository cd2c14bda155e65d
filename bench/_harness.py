"""What the shopgate benchmarks share: the machine's description and one way to drive load.

The load generator is `wrk` (Debian's, at /usr/bin/wrk) when present, else shopgate's own async
Python generator at a rate it cannot reach (so, like wrk, it runs closed-loop at full speed). Every
result says which one produced it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shopgate.tool.load import Load, Target, summarize  # noqa: E402
from shopgate.processes import cpu_model  # noqa: E402

WRK = shutil.which("wrk") or ("/usr/bin/wrk" if os.path.exists("/usr/bin/wrk") else None)
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def machine() -> str:
    cpu = cpu_model() or platform.processor() or "unknown CPU"
    haproxy = (subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split() + ["?"] * 3)[2]
    return f"{os.cpu_count()} × {cpu}, Linux {platform.release()}, Python {platform.python_version()}, HAProxy {haproxy}"


@dataclass(frozen=True)
class LoadResult:
    generator: str
    requests: int
    errors: int          # no response, socket errors, and responses outside 2xx/3xx
    rate: float          # requests per second
    p50_ms: float
    p99_ms: float


class UnreadableRun(Exception):
    """A load run whose output the bench cannot read: the message names the field and shows the output."""


def _ms(text: str, field: str, output: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not found:
        raise UnreadableRun(f"wrk's {field} {text!r} is not a duration; wrk printed:\n{output}")
    return float(found.group(1)) * UNITS[found.group(2)]


def parse_wrk(output: str, generator: str) -> LoadResult:
    """wrk --latency's summary. The percentiles are read only from the lines that START with one
    ("  50%   1.20ms"): the "+/- Stdev" column of the Latency line (e.g. "78.50%") is not one."""
    def grab(pattern: str, field: str, default: str | None = None) -> str:
        found = re.search(pattern, output, re.MULTILINE)
        if found:
            return found.group(1)
        if default is None:
            raise UnreadableRun(f"no {field} in wrk's output:\n{output}")
        return default

    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", grab(r"Socket errors: (.*)", "socket errors", "")))
    return LoadResult(generator, int(grab(r"(\d+) requests in", "request count")),
                      socket_errors + int(grab(r"Non-2xx or 3xx responses: (\d+)", "non-2xx count", "0")),
                      float(grab(r"Requests/sec:\s+([\d.]+)", "Requests/sec")),
                      _ms(grab(r"^\s*50%\s+(\S+)", "50% latency"), "50% latency", output),
                      _ms(grab(r"^\s*99%\s+(\S+)", "99% latency"), "99% latency", output))


def drive(url: str, seconds: float, connections: int = 16) -> LoadResult:
    """Full-speed GET load on `url` for `seconds`."""
    if WRK:
        threads = min(2, connections)
        done = subprocess.run([WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", url],
                              capture_output=True, text=True, check=True)
        return parse_wrk(done.stdout, f"wrk 4.1 (-t{threads} -c{connections})")
    base, path = url.split("/", 3)[:3], "/" + url.split("/", 3)[3]
    records = Load("/".join(base), [Target("GET", path, expect=(200,))], rate=1e6, concurrency=connections, duration=seconds).run()
    figures = summarize(records)
    return LoadResult(f"shopgate.tool.load (asyncio+aiohttp, {connections} workers)", figures["requests"], figures["failed"],
                      figures["rate"], figures["p50_ms"], figures["p99_ms"])


def run(main: Callable[[], int]) -> int:
    """A bench's main(), except that a run it cannot read ends it with the reason, not a traceback."""
    try:
        return main()
    except UnreadableRun as error:
        print(f"bench stopped: could not read a load run: {error}", file=sys.stderr)
        return 2


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank value at `fraction` (0.99 for p99) of `values`; 0.0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))] if ordered else 0.0


def load_average() -> str:
    """The machine's load average, for every printed figure (the machine is shared)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"


def wait(what: str, predicate: Callable[[], bool], timeout: float = 120.0, interval: float = 0.05) -> float:
    """Poll `predicate` every `interval` s until it holds; the seconds it took. A bench that cannot get there
    stops saying what did not happen (SystemExit), rather than printing figures of a run that did not happen."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"not within {timeout:.0f}s: {what}")
        time.sleep(interval)
    return time.monotonic() - started


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [tuple(str(c) for c in row) for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
