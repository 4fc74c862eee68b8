"""Finding the knee: the highest offered rate at which a server stays inside its SLO.

A step *passes* when the P99 of its successful answers is within the SLO,
at most `max_error_fraction` of its requests failed (a server that refuses
work to keep its tail short does not get to call the refusals served), and
every request was answered. The search brackets the knee by doubling or
halving from a first guess, then bisects the bracket until it is narrower
than `tolerance` (relative) or the step budget is spent. Each `KneeSearch`
only proposes rates and takes verdicts, so several searches (one per
target, with `--compare`) can run interleaved, step by step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .stats import StepResult

__all__ = ["KneeSearch", "step_passes"]


def step_passes(
    step: StepResult,
    slo_ms: float,
    max_error_fraction: float = 0.01,
    *,
    quantile: Literal["p50", "p99"] = "p99",
) -> bool:
    """Whether `step` stayed inside the SLO; see the module docstring.

    `quantile` is the latency held to `slo_ms`: the P99 (the SLO's own), or
    the median, which asks only whether the server kept up with the load (a
    queue growing through the step drags the median with it).
    """
    if step.sent == 0 or step.errors.get("UNANSWERED"):
        return False
    if step.error_count > max_error_fraction * step.sent:
        return False
    latency = step.p50_ms if quantile == "p50" else step.p99_ms
    return latency <= slo_ms


@dataclass
class KneeSearch:
    """Bisection for the knee, one proposed rate at a time.

    Args:
        first: the rates to try first, in order (a guess, or a bracket
            `low, high`); one already decided by an earlier verdict is skipped.
        tolerance: stop when (fail - pass) / pass is at most this.
        max_steps: stop after this many steps, bracket or not.
        min_rate: give up halving below this rate (the SLO is out of reach).
    """

    first: Sequence[float]
    tolerance: float = 0.05
    max_steps: int = 8
    min_rate: float = 1.0
    passed: float | None = None
    """Highest rate that passed so far: the knee, when the search ends."""
    failed: float | None = None
    """Lowest rate that failed so far."""
    history: list[tuple[float, bool]] = field(default_factory=list)

    def next_rate(self) -> float | None:
        """The next rate to measure, or None when the search is over."""
        if len(self.history) >= self.max_steps:
            return None
        for rate in self.first:
            if self._undecided(rate) and rate not in (r for r, _ in self.history):
                return rate
        if self.passed is None:
            if self.failed is None:
                return None
            rate = self.failed / 2
            return rate if rate >= self.min_rate else None
        if self.failed is None:
            return self.passed * 2
        if (self.failed - self.passed) / self.passed <= self.tolerance:
            return None
        return (self.passed + self.failed) / 2

    def record(self, rate: float, passed: bool) -> None:
        """Take the verdict of the step measured at `rate`."""
        self.history.append((rate, passed))
        if passed:
            self.passed = rate if self.passed is None else max(self.passed, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)

    def _undecided(self, rate: float) -> bool:
        """Whether measuring `rate` could still move the bracket."""
        if self.passed is not None and rate <= self.passed:
            return False
        return not (self.failed is not None and rate >= self.failed)

    @property
    def done(self) -> bool:
        """Whether the search has nothing more to measure."""
        return self.next_rate() is None
