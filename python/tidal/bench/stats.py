"""Figures of one load step, computed from every recorded latency.

Percentiles are numpy's (`np.percentile`, linear interpolation) over the
latencies of the successful answers to requests intended inside the
measured window, each timed from its intended send time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # TypedDicts of the stub only
    from .._core import LoadResult
    from .workload import TrafficClass

__all__ = ["ClassFigures", "StepResult", "histogram", "summarize"]

_BINS_PER_DECADE = 20
"""Histogram resolution: 20 log-spaced bins per factor of ten (12% wide)."""


def _percentile(values: npt.NDArray[np.float64], q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def histogram(latency_ms: npt.NDArray[np.float64]) -> dict[str, list[float] | list[int]]:
    """Counts of `latency_ms` in log-spaced bins, 20 per decade, covering
    the values: `{"edges_ms": [...], "counts": [...]}` (one count fewer than edges)."""
    if latency_ms.size == 0:
        return {"edges_ms": [], "counts": []}
    low = np.floor(np.log10(max(float(latency_ms.min()), 1e-3)) * _BINS_PER_DECADE)
    high = np.ceil(np.log10(max(float(latency_ms.max()), 1e-3)) * _BINS_PER_DECADE)
    edges = 10 ** (np.arange(low, max(high, low + 1) + 1) / _BINS_PER_DECADE)
    counts, _ = np.histogram(latency_ms, bins=edges)
    return {"edges_ms": [float(e) for e in edges], "counts": [int(c) for c in counts]}


@dataclass
class ClassFigures:
    """What one traffic class got in a step."""

    name: str
    sent: int
    answered: int
    throughput: float
    """Successful answers per second."""
    goodput: float
    """Successful answers within the class's SLO per second."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict[str, int]
    slo_ms: float | None
    receive_lag_p99_ms: float | None = None
    """P99 of the time the class's answers waited in the generator's socket."""


@dataclass
class StepResult:
    """One step of a benchmark: a load level and what it gave.

    Rates are per second of the measured window. For an in-process ONNX
    Runtime step (`mode == "raw"`) a "request" is one call of the model at
    `rows_per_request` rows, and throughput counts rows.
    """

    label: str
    mode: str
    """`open`, `closed` or `raw`."""
    offered_rate: float | None
    """Mean arrival rate asked for (open loop); None for closed loop."""
    concurrency: int | None
    """Calls in flight (closed loop); None for open loop."""
    throughput: float
    """Successful answers per second (raw: rows per second)."""
    goodput: float
    """Successful answers within the SLO per second (all successes when no SLO)."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]
    """Failed answers by gRPC status name; `MALFORMED` for OK answers that
    failed the checks; `UNANSWERED` for requests still without an answer
    at the end of the drain."""
    send_lag_p99_ms: float | None
    """P99 of the generator's own delay, actual minus intended send time."""
    mean_batch_size: float | None = None
    """The server's samples per executed batch over the step, from ModelStatistics."""
    achieved_rate: float = 0.0
    """Requests the generator actually sent per second of the window."""
    intended_rate: float = 0.0
    """Requests the schedule placed in the window, per second."""
    answered: int = 0
    """Answers to requests intended in the window, failures included."""
    sent: int = 0
    send_lag_p50_ms: float | None = None
    send_lag_max_ms: float | None = None
    receive_lag_p50_ms: float | None = None
    """Median of the generator's own delay on the way back: from an answer's
    bytes reaching its socket to the generator taking it (every answer)."""
    receive_lag_p99_ms: float | None = None
    receive_lag_max_ms: float | None = None
    window_s: float = 0.0
    slo_ms: float | None = None
    arrivals: str | None = None
    """Open loop: `poisson`, `uniform`, `onoff` or `trace`."""
    peak_rate: float | None = None
    """On/off bursts: the rate inside a burst."""
    api: str = "unary"
    target: str = ""
    model: str = ""
    rows_per_request: int = 1
    little_in_flight: float = 0.0
    """Little's law: answers per second x mean time in flight (latency less send lag)."""
    measured_in_flight: float = 0.0
    """Requests in flight, time-averaged over the window by the generator."""
    little_ratio: float | None = None
    """measured / predicted in-flight; near 1 in a steady state."""
    ceiling: float | None = None
    """Best rows per second of the model in-process (ONNX Runtime alone)."""
    ceiling_fraction: float | None = None
    """Rows per second served as a fraction of `ceiling`."""
    histogram: dict[str, list[float] | list[int]] = field(default_factory=dict)
    """Latencies of the successful answers: log-spaced bin edges and counts."""
    classes: list[ClassFigures] = field(default_factory=list)
    """Per traffic class, when there are several."""
    error_examples: dict[str, str] = field(default_factory=dict)
    raw: Any = field(default=None, repr=False, compare=False)
    """The load generator's per-answer arrays (not written to JSON)."""

    @property
    def error_count(self) -> int:
        """Failed requests, all codes together."""
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure."""
        data = asdict(self)
        data.pop("raw")
        data["error_count"] = self.error_count
        return data


def summarize(
    result: LoadResult,
    *,
    label: str,
    mode: str,
    offered_rate: float | None,
    concurrency: int | None,
    slo_ms: float | None,
    mean_batch_size: float | None = None,
    classes: Sequence[TrafficClass] = (),
    rows_per_request: int = 1,
) -> StepResult:
    """Reduce a raw load result to the figures of a step."""
    window = result["window_s"]
    latency = result["latency_ms"]
    codes = result["code"]
    ok_mask = codes == 0
    ok = latency[ok_mask]
    within = ok if slo_ms is None else ok[ok <= slo_ms]
    throughput = ok.size / window if window > 0 else 0.0
    mean = float(ok.mean()) if ok.size else float("nan")
    # Little's law over everything answered: arrival rate x time in flight.
    flight = latency - result["sample_send_lag_ms"]
    answered_rate = latency.size / window if window > 0 else 0.0
    little = answered_rate * float(flight.mean()) / 1e3 if flight.size else 0.0
    measured = result["mean_in_flight"]
    errors = dict(result["errors"])
    examples = dict(result["error_examples"])
    if result["malformed"]:
        errors["MALFORMED"] = result["malformed"]
        examples["MALFORMED"] = result["malformed_example"] or ""
    if result["unanswered"]:
        errors["UNANSWERED"] = result["unanswered"]
        examples["UNANSWERED"] = "no answer before the end of the drain time"
    lag = result["send_lag_ms"]
    back = result["sample_receive_lag_ms"]
    per_class: list[ClassFigures] = []
    if len(classes) > 1:
        for index, spec in enumerate(classes):
            mask = result["class_index"] == index
            per_class.append(
                _class_figures(
                    spec.name,
                    latency[mask],
                    codes[mask],
                    back[mask],
                    sent=result["sent_by_class"][index],
                    window=window,
                    slo_ms=spec.slo_ms if spec.slo_ms is not None else slo_ms,
                )
            )
    return StepResult(
        label=label,
        mode=mode,
        offered_rate=offered_rate,
        concurrency=concurrency,
        achieved_rate=result["sent_in_window"] / window if window > 0 else 0.0,
        intended_rate=result["intended"] / window if window > 0 else 0.0,
        throughput=throughput,
        goodput=within.size / window if window > 0 else 0.0,
        p50_ms=_percentile(ok, 50),
        p90_ms=_percentile(ok, 90),
        p99_ms=_percentile(ok, 99),
        p999_ms=_percentile(ok, 99.9),
        max_ms=float(ok.max()) if ok.size else float("nan"),
        mean_ms=mean,
        answered=int(latency.size),
        sent=result["sent"],
        errors=errors,
        send_lag_p50_ms=_percentile(lag, 50),
        send_lag_p99_ms=_percentile(lag, 99),
        send_lag_max_ms=float(lag.max()) if lag.size else float("nan"),
        receive_lag_p50_ms=_percentile(back, 50),
        receive_lag_p99_ms=_percentile(back, 99),
        receive_lag_max_ms=float(back.max()) if back.size else float("nan"),
        window_s=window,
        slo_ms=slo_ms,
        mean_batch_size=mean_batch_size,
        rows_per_request=rows_per_request,
        little_in_flight=little,
        measured_in_flight=measured,
        little_ratio=measured / little if little > 0 else None,
        histogram=histogram(ok),
        classes=per_class,
        error_examples=examples,
        raw=result,
    )


def _class_figures(
    name: str,
    latency: npt.NDArray[np.float64],
    codes: npt.NDArray[np.int32],
    receive_lag: npt.NDArray[np.float64],
    *,
    sent: int,
    window: float,
    slo_ms: float | None,
) -> ClassFigures:
    ok = latency[codes == 0]
    within = ok if slo_ms is None else ok[ok <= slo_ms]
    errors: dict[str, int] = {}
    for code, count in zip(*np.unique(codes[codes != 0], return_counts=True), strict=True):
        key = _CODE_NAMES.get(int(code), "UNKNOWN")
        errors[key] = errors.get(key, 0) + int(count)
    unanswered = sent - int(latency.size)
    if unanswered > 0:
        errors["UNANSWERED"] = unanswered
    return ClassFigures(
        name=name,
        sent=sent,
        answered=int(latency.size),
        throughput=ok.size / window if window > 0 else 0.0,
        goodput=within.size / window if window > 0 else 0.0,
        p50_ms=_percentile(ok, 50),
        p90_ms=_percentile(ok, 90),
        p99_ms=_percentile(ok, 99),
        p999_ms=_percentile(ok, 99.9),
        max_ms=float(ok.max()) if ok.size else float("nan"),
        errors=errors,
        slo_ms=slo_ms,
        receive_lag_p99_ms=_percentile(receive_lag, 99),
    )


_CODE_NAMES = {
    -1: "MALFORMED",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
"""gRPC status names by code, as the load generator names them."""
