"""Two configurations measured in alternated rounds, and what their difference supports.

On a shared machine a configuration's figures move by 10-30% from minute to
minute, so two configurations are compared round by round: each round runs
both, one after the other (the order swapped every round), and the
difference within a round is free of the drift between rounds. Over `n`
rounds the median of those differences has a distribution-free confidence
interval, the sign test's: the `k`-th smallest and `k`-th largest of the
`n` differences, with `k` the largest for which the interval covers the
median with at least the asked probability (about 94% for five rounds:
their minimum and maximum; 93% for eight: the second smallest and second
largest). It assumes nothing about the shape of the noise, whose tail on
this machine is long (one round in ten may be two times slower).

The verdict reads the interval the way criterion reads its own: *level*
when it holds zero (no difference the rounds can resolve; its bounds say how
large a difference could still hide in them), *better* or *worse* when it
lies wholly on one side.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["PairedDifference", "median_interval", "paired"]

Verdict = Literal["better", "level", "worse"]


def median_interval(values: Sequence[float], confidence: float = 0.9) -> tuple[float, float, float]:
    """The sign test's interval for the median of `values`: (low, high, coverage).

    `coverage` is the probability, at least `confidence` where `values` has
    enough entries for that, that the interval holds the true median; with
    too few it is the widest interval's (the minimum to the maximum).

    Raises:
        ValueError: `values` is empty.
    """
    if not values:
        raise ValueError("no values to bound the median of")
    ordered = sorted(values)
    n = len(ordered)
    best_k, best_coverage = 1, _sign_coverage(n, 1)
    for k in range(2, n // 2 + 1):
        coverage = _sign_coverage(n, k)
        if coverage < confidence:
            break
        best_k, best_coverage = k, coverage
    return ordered[best_k - 1], ordered[n - best_k], best_coverage


def _sign_coverage(n: int, k: int) -> float:
    """P(the k-th smallest of n draws <= median <= the k-th largest)."""
    tail = sum(math.comb(n, i) for i in range(k)) / 2**n
    return 1.0 - 2.0 * tail


@dataclass(frozen=True)
class PairedDifference:
    """One figure of configuration A against B over alternated rounds.

    `differences` are A - B per round, relative to B's figure of the same
    round when `relative` (a fraction: -0.05 is A 5% below B).
    """

    differences: tuple[float, ...]
    median: float
    low: float
    high: float
    coverage: float
    relative: bool
    lower_is_better: bool

    @property
    def verdict(self) -> Verdict:
        """`level` when the interval holds zero, else which side A is on."""
        if self.low <= 0.0 <= self.high:
            return "level"
        below = self.high < 0.0
        return "better" if below == self.lower_is_better else "worse"

    @property
    def ahead(self) -> int:
        """Rounds in which A's figure was at least as good as B's."""
        if self.lower_is_better:
            return sum(d <= 0.0 for d in self.differences)
        return sum(d >= 0.0 for d in self.differences)

    def describe(self, unit: str = "ms") -> str:
        """`level, median +0.4% [-3.1%, +2.0%] (94%), ahead in 3 of 5`."""

        def fmt(value: float) -> str:
            return f"{value:+.1%}" if self.relative else f"{value:+.2f} {unit}"

        return (
            f"{self.verdict}, median {fmt(self.median)} [{fmt(self.low)}, {fmt(self.high)}] "
            f"({self.coverage:.0%}), ahead in {self.ahead} of {len(self.differences)}"
        )


def paired(
    a: Sequence[float],
    b: Sequence[float],
    *,
    relative: bool = True,
    lower_is_better: bool = True,
    confidence: float = 0.9,
) -> PairedDifference:
    """A's figures against B's, round by round (`a[i]` and `b[i]` ran in the same round).

    Raises:
        ValueError: the two have different numbers of rounds, or none, or a
            relative difference is asked against a figure of zero.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} rounds of A against {len(b)} of B: pair them round by round")
    if relative and any(y == 0.0 for y in b):
        raise ValueError("a relative difference against a figure of 0")
    differences = tuple((x - y) / y if relative else x - y for x, y in zip(a, b, strict=True))
    low, high, coverage = median_interval(differences, confidence)
    return PairedDifference(
        differences=differences,
        median=statistics.median(differences),
        low=low,
        high=high,
        coverage=coverage,
        relative=relative,
        lower_is_better=lower_is_better,
    )
