"""The benches' reading of wrk's summary: the figures they print come from the right column, and a
run they cannot read stops the bench with the reason instead of a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _harness import UnreadableRun, parse_wrk, run  # noqa: E402

# A real wrk 4.1 summary whose Req/Sec "+/- Stdev" column ends in "50%" just before "Latency".
WRK_OUTPUT = """Running 6s test @ http://127.0.0.1:8080/api/v1/products
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.07ms    2.45ms  15.41ms   75.37%
    Req/Sec     1.98k   192.73     2.65k    78.50%
  Latency Distribution
     50%    3.45ms
     75%    5.19ms
     90%    7.93ms
     99%   12.05ms
  23546 requests in 6.10s, 1.82MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:   3860.31
Transfer/sec:      1.66MB
"""


def test_percentiles_come_from_the_distribution_not_the_stdev_column() -> None:
    result = parse_wrk(WRK_OUTPUT, "wrk")
    assert (result.p50_ms, result.p99_ms) == (3.45, 12.05)
    assert (result.requests, result.errors, result.rate) == (23546, 6, 3860.31)


def test_a_run_without_latency_lines_is_reported_not_crashed(capsys: pytest.CaptureFixture[str]) -> None:
    truncated = "\n".join(line for line in WRK_OUTPUT.splitlines() if not line.strip().startswith(("50%", "75%", "90%", "99%")))
    with pytest.raises(UnreadableRun, match="50% latency"):
        parse_wrk(truncated, "wrk")
    assert run(lambda: parse_wrk(truncated, "wrk") and 0) == 2
    assert "could not read a load run: no 50% latency" in capsys.readouterr().err
