"""Figures of one load step, computed from every recorded latency."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # a TypedDict of the stub only
    from .._core import LoadResult

__all__ = ["StepResult", "summarize"]


@dataclass
class StepResult:
    """One step of a benchmark: a load level and what it gave."""

    label: str
    mode: str
    offered_rate: float | None
    """Poisson rate asked for (open loop); None for closed loop."""
    concurrency: int | None
    achieved_rate: float
    """Requests actually sent per second."""
    throughput: float
    """Successful answers per second."""
    goodput: float
    """Successful answers within the SLO per second (all successes when no SLO)."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    answered: int
    errors: dict[str, int]
    send_lag_p99_ms: float
    window_s: float
    slo_ms: float | None = None
    mean_batch_size: float | None = None
    little_in_flight: float = 0.0
    """Little's law: mean requests in flight = throughput x mean latency."""
    error_examples: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure."""
        return asdict(self)


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def summarize(
    result: LoadResult,
    *,
    label: str,
    mode: str,
    offered_rate: float | None,
    concurrency: int | None,
    slo_ms: float | None,
    mean_batch_size: float | None = None,
) -> StepResult:
    """Reduce a raw load result to the figures of a step."""
    window = result["window_s"]
    ok = result["latency_ms"][result["code"] == 0]
    within = ok if slo_ms is None else ok[ok <= slo_ms]
    throughput = ok.size / window
    mean = float(ok.mean()) if ok.size else float("nan")
    return StepResult(
        label=label,
        mode=mode,
        offered_rate=offered_rate,
        concurrency=concurrency,
        achieved_rate=result["sent"] / window,
        throughput=throughput,
        goodput=within.size / window,
        p50_ms=_percentile(ok, 50),
        p90_ms=_percentile(ok, 90),
        p99_ms=_percentile(ok, 99),
        p999_ms=_percentile(ok, 99.9),
        max_ms=float(ok.max()) if ok.size else float("nan"),
        mean_ms=mean,
        answered=int(result["latency_ms"].size),
        errors=dict(result["errors"]),
        send_lag_p99_ms=_percentile(result["send_lag_ms"], 99),
        window_s=window,
        slo_ms=slo_ms,
        mean_batch_size=mean_batch_size,
        little_in_flight=throughput * mean / 1e3 if ok.size else 0.0,
        error_examples=dict(result["error_examples"]),
    )
