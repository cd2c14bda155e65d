"""Flap damping of agent checks: SuccessBeforePassing, FailuresBeforeWarning, FailuresBeforeCritical.

Consul's StatusHandler, as a pure function: a check only turns passing after
`success_before_passing` successes in a row (warning counts as a success, as
in Consul), and only turns critical after `failures_before_critical` failures
in a row (warning from `failures_before_warning` on); the opposite result
resets the count. A streak starts at the thresholds, so a new check's first
result counts at once (Consul's NewStatusHandler does the same); the damping
applies from the first opposite result on. Where Consul only logs a held-back
result, we keep the status and say so in the check's Output, so that
`/v1/agent/checks` shows why a check is still critical. Streaks live in
memory: after a catalog restart they start again at the thresholds, as
Consul's do after an agent restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from shopgate.consul_client.protocol import CRITICAL, PASSING, WARNING


@dataclass(frozen=True)
class Thresholds:
    success_before_passing: int = 0
    failures_before_warning: int = 0     # 0: the same as failures_before_critical
    failures_before_critical: int = 0

    @property
    def warning_from(self) -> int:
        return self.failures_before_warning or self.failures_before_critical


@dataclass(frozen=True)
class Streak:
    """Consecutive successes and failures seen so far (one of them is always 0 after a result)."""

    successes: int
    failures: int


def first_streak(thresholds: Thresholds) -> Streak:
    """A new check's streak: at the thresholds, so that its first result is recorded as it comes."""
    return Streak(thresholds.success_before_passing, thresholds.failures_before_critical)


def expired_streak() -> Streak:
    """After a TTL expiry (critical at once, as in Consul): recovery counts its successes from zero."""
    return Streak(0, 0)


def judge(thresholds: Thresholds, streak: Streak, current: str, status: str,
          output: str) -> tuple[Streak, str, str]:
    """(new streak, status to record, output to record) for one result `status`/`output` of a check now `current`."""
    if status in (PASSING, WARNING):
        streak = Streak(streak.successes + 1, 0)
        if streak.successes >= thresholds.success_before_passing:
            return streak, status, output
        return streak, current, (f"Check {status} but has not reached success threshold "
                                 f"({streak.successes} of {thresholds.success_before_passing}): {output}")
    streak = Streak(0, streak.failures + 1)
    if streak.failures >= thresholds.failures_before_critical:
        return streak, CRITICAL, output
    if streak.failures >= thresholds.warning_from:
        return streak, WARNING, output
    return streak, current, (f"Check failed but has not reached failure threshold "
                             f"({streak.failures} of {thresholds.failures_before_critical}): {output}")
