"""The demo's picture: throughput, errors, latency and routed instances over time, each step marked.

Pure input (records, an instance timeline, step spans) to one PNG; matplotlib's Agg backend, so it
works without a display.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from shopgate.tool.load import RequestRecord, percentile  # noqa: E402


@dataclass(frozen=True)
class StepSpan:
    """One demo step on the load's clock: when the action began and when the gateway had followed."""

    label: str
    start: float
    end: float


def per_second(records: list[RequestRecord]) -> tuple[list[int], list[int], list[float], list[float]]:
    """Per one-second bin: successful and failed requests, p50 and p99 latency (ms).

    The load usually stops a moment into its last second; that short bin is left out (its rate
    would look like a drop) unless a request in it failed.
    """
    last = max((r.started for r in records), default=0.0)
    seconds = int(last) + 1
    ok, failed = [0] * seconds, [0] * seconds
    latencies: list[list[float]] = [[] for _ in range(seconds)]
    for record in records:
        second = int(record.started)
        (failed if record.failed else ok)[second] += 1
        latencies[second].append(record.latency * 1000)
    if seconds > 1 and last - int(last) < 0.9 and not failed[-1]:
        ok, failed, latencies = ok[:-1], failed[:-1], latencies[:-1]
    return ok, failed, [percentile(v, 0.5) for v in latencies], [percentile(v, 0.99) for v in latencies]


def render_chart(path: Path, records: list[RequestRecord], timeline: list[tuple[float, dict[str, int]]],
                 steps: list[StepSpan], title: str) -> Path:
    """Write the PNG to `path` and return it."""
    end = max([r.started for r in records] + [t for t, _ in timeline] + [s.end for s in steps] + [1.0])
    ok, failed, p50, p99 = per_second(records)
    xs = list(range(len(ok)))
    failures = sum(r.failed for r in records)

    fig, (ax_rate, ax_latency, ax_instances) = plt.subplots(
        3, 1, figsize=(13, 10), sharex=True, gridspec_kw={"height_ratios": [3, 2, 3]})
    fig.suptitle(title, fontsize=13, fontweight="bold")

    ax_rate.step(xs + [len(xs)], ok + ok[-1:], where="post", color="#2a7ab9", linewidth=1.6, label="successful req/s")
    ax_rate.bar(xs, failed, color="#d62728", width=1.0, align="edge", label=f"failed req/s (total {failures})")
    ax_rate.set_ylabel("requests / s")
    ax_rate.set_ylim(0, max(ok + failed + [1]) * 1.3)
    ax_rate.legend(loc="lower right", fontsize=9)

    ax_latency.step(xs + [len(xs)], p50 + p50[-1:], where="post", color="#555555", linewidth=1.2, label="p50 per second")
    ax_latency.step(xs + [len(xs)], p99 + p99[-1:], where="post", color="#ff7f0e", linewidth=1.2, label="p99 per second")
    ax_latency.set_ylabel("latency (ms)")
    ax_latency.set_ylim(bottom=0)
    ax_latency.legend(loc="upper right", fontsize=9)

    services = sorted({name for _, counts in timeline for name in counts})
    colors = plt.get_cmap("tab10")
    for index, service in enumerate(services):
        times = [t for t, _ in timeline] + [end]
        counts = [c.get(service, 0) for _, c in timeline]
        counts.append(counts[-1])
        offset = (index - len(services) / 2) * 0.04     # keep equal counts from hiding each other
        ax_instances.step(times, [c + offset for c in counts], where="post", color=colors(index), linewidth=1.8, label=service)
    ax_instances.set_ylabel("routed instances")
    ax_instances.set_xlabel("seconds since the load started")
    ax_instances.set_ylim(bottom=-0.3, top=max([c for _, cs in timeline for c in cs.values()] + [1]) + 1)
    ax_instances.yaxis.get_major_locator().set_params(integer=True)
    ax_instances.legend(loc="upper right", fontsize=9, ncol=len(services) or 1)

    top = ax_rate.get_ylim()[1]
    for number, step in enumerate(steps, 1):
        for axis in (ax_rate, ax_latency, ax_instances):
            axis.axvspan(step.start, max(step.end, step.start + 0.15), color="#999999", alpha=0.15, linewidth=0)
            axis.axvline(step.start, color="#666666", linewidth=0.8, linestyle="--")
        ax_rate.text(step.start, top * 0.97, f" {number}", fontsize=10, fontweight="bold", va="top", ha="left", color="#333333")
    for axis in (ax_rate, ax_latency, ax_instances):
        axis.grid(True, alpha=0.3)
        axis.set_xlim(0, max(end, len(xs)))
    rows = (len(steps) + 1) // 2
    for number, step in enumerate(steps, 1):
        column, row = divmod(number - 1, rows)
        fig.text(0.06 + 0.47 * column, 0.075 - 0.022 * row, f"{number}. {step.label}", fontsize=9, va="top", ha="left")
    fig.tight_layout(rect=(0, 0.09 if steps else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
