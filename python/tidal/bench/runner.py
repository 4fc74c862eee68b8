"""Runs load steps against a server and reads its batch statistics around each."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from .. import _core
from .._proto import grpc_service_pb2 as pb
from ..client import Client
from .progress import StepProgress
from .stats import StepResult, summarize
from .workload import Workload

__all__ = ["LoadSpec", "batch_counters", "run_step"]


@dataclass(frozen=True)
class LoadSpec:
    """One load level.

    Attributes:
        mode: `closed` (`concurrency` calls in flight) or `open` (arrivals
            on a schedule, whatever the answers do).
        concurrency: closed loop: calls in flight.
        rate: open loop: arrivals per second (on/off: inside a burst).
        arrivals: open loop: `poisson`, `uniform`, `onoff` or `trace`.
        on_s: on/off: length of a burst.
        off_s: on/off: length of the pause after it.
        off_rate: on/off: arrivals per second in the pause.
        trace_s: trace: arrival times in seconds from the start, ascending.
    """

    mode: str = "closed"
    concurrency: int = 1
    rate: float = 0.0
    arrivals: str = "poisson"
    on_s: float = 0.0
    off_s: float = 0.0
    off_rate: float = 0.0
    trace_s: tuple[float, ...] | None = None

    @classmethod
    def trace(cls, times_s: Sequence[float], rate: float | None = None) -> LoadSpec:
        """Arrivals at recorded times (shifted to start at 0), or, with
        `rate`, the same pattern stretched or squeezed to that mean rate."""
        if len(times_s) < 2:
            raise ValueError("an arrival trace needs at least two arrival times")
        ordered = sorted(times_s)
        start = ordered[0]
        shifted = [t - start for t in ordered]
        span = shifted[-1]
        if span <= 0:
            raise ValueError("the arrival trace spans no time: every arrival is at once")
        if rate is not None:
            scale = (len(shifted) - 1) / span / rate
            shifted = [t * scale for t in shifted]
        return cls(mode="open", arrivals="trace", trace_s=tuple(shifted))

    @property
    def offered_rate(self) -> float | None:
        """Mean arrivals per second asked for; None for closed loop."""
        if self.mode != "open":
            return None
        if self.arrivals == "onoff":
            period = self.on_s + self.off_s
            return (self.rate * self.on_s + self.off_rate * self.off_s) / period
        if self.arrivals == "trace" and self.trace_s:
            return (len(self.trace_s) - 1) / (self.trace_s[-1] - self.trace_s[0])
        return self.rate

    @property
    def span_s(self) -> float:
        """How long the schedule runs (a trace ends); infinite otherwise."""
        if self.arrivals == "trace" and self.trace_s:
            return self.trace_s[-1]
        return math.inf

    def describe(self) -> str:
        """A few words for progress lines and tables."""
        if self.mode == "closed":
            return f"{self.concurrency} in flight"
        rate = self.offered_rate or 0.0
        if self.arrivals == "onoff":
            return (
                f"{self.rate:,.0f}/s for {self.on_s:g} s, {self.off_rate:,.0f}/s for"
                f" {self.off_s:g} s (mean {rate:,.0f}/s)"
            )
        if self.arrivals == "trace":
            return f"trace at {rate:,.0f}/s"
        return f"{rate:,.0f}/s {self.arrivals}"

    def arguments(self) -> dict[str, Any]:
        """The `tidal._core.LoadRun` keyword arguments of this level."""
        if self.mode == "closed":
            return {"mode": "closed", "concurrency": self.concurrency}
        return {
            "mode": "open",
            "arrivals": self.arrivals,
            "rate": self.rate,
            "on_s": self.on_s,
            "off_s": self.off_s,
            "off_rate": self.off_rate,
            "trace_s": list(self.trace_s) if self.trace_s is not None else None,
        }


def batch_counters(target: str, model: str) -> tuple[int, int] | None:
    """(inference_count, execution_count) of `model`, or None if the server has no statistics."""
    try:
        with Client(target) as client:
            response = client.stub.ModelStatistics(
                pb.ModelStatisticsRequest(name=model), timeout=10
            )
    except grpc.RpcError:
        return None
    for stats in response.model_stats:
        if stats.name == model:
            return stats.inference_count, stats.execution_count
    return None


def run_step(
    target: str,
    workload: Workload,
    *,
    mode: str = "closed",
    concurrency: int = 1,
    rate: float = 0.0,
    load: LoadSpec | None = None,
    api: str = "unary",
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    drain_s: float = 10.0,
    slo_ms: float | None = None,
    connections: int = 4,
    seed: int = 0,
    label: str = "",
    progress: StepProgress | None = None,
) -> StepResult:
    """Drive `target` with one load level and summarize it.

    The level is `load`, or else `mode` with `concurrency` or a Poisson
    `rate`. The mean batch size is the server's own count of samples per
    executed batch over the step (warm-up included), when it reports
    statistics. A trace shorter than warm-up plus duration shortens the
    window to what it covers.

    Raises:
        ValueError: a bad load level.
        RuntimeError: the target cannot be reached.
        KeyboardInterrupt: the step was interrupted (it is stopped first).
    """
    if load is None:
        load = LoadSpec(mode=mode, concurrency=concurrency, rate=rate)
    if load.span_s < math.inf:
        duration_s = max(0.0, min(duration_s, load.span_s - warmup_s))
        if duration_s <= 0:
            raise ValueError(
                f"the arrival trace lasts {load.span_s:.3g} s, no longer than the"
                f" {warmup_s:g} s warm-up; use a shorter --warmup"
            )
    before = batch_counters(target, workload.model)
    run = _core.LoadRun(
        target,
        workload.load_classes(),
        api=api,
        connections=connections,
        warmup_s=warmup_s,
        duration_s=duration_s,
        drain_s=drain_s,
        seed=seed,
        **load.arguments(),
    )
    try:
        if progress is not None:
            progress.watch(
                run, f"{label or workload.model}: {load.describe()}", warmup_s + duration_s
            )
        else:
            run.wait()
    except KeyboardInterrupt:
        run.stop()
        run.wait()
        raise
    result = run.result()
    after = batch_counters(target, workload.model)
    mean_batch = None
    if before and after and after[1] > before[1]:
        mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    step = summarize(
        result,
        label=label or workload.model,
        mode=load.mode,
        offered_rate=load.offered_rate,
        concurrency=load.concurrency if load.mode == "closed" else None,
        slo_ms=slo_ms,
        mean_batch_size=mean_batch,
        classes=workload.classes,
        rows_per_request=workload.batch_size,
    )
    step.api = api
    step.target = target
    step.model = workload.model
    if load.mode == "open":
        step.arrivals = load.arrivals
        if load.arrivals == "onoff":
            step.peak_rate = load.rate
    return step
