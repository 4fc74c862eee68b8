"""The latency-throughput picture of a benchmark."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import groupby
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed

import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .stats import StepResult
from .sweep import step_passes

__all__ = ["plot_steps"]


def _rows_per_s(s: StepResult) -> float:
    # In-process steps already count rows; a server step counts answers.
    return s.throughput if s.mode == "raw" else s.throughput * s.rows_per_request


def plot_steps(
    steps: Sequence[StepResult],
    path: Path,
    *,
    title: str = "",
    knees: Mapping[str, float | None] | None = None,
    ceiling: float | None = None,
) -> Path:
    """Draw the benchmark and save it as a PNG.

    Left: P50 and P99 latency against achieved throughput (rows per second),
    one curve per label (configuration or server), the SLO as a line, the
    knee marked with a star (the sweep's knee rate when `knees` gives one,
    else the highest throughput of a step that passes, see
    `tidal.bench.sweep.step_passes`), and the in-process ceiling as a
    vertical line with its per-batch-size curve. Right: goodput against
    offered load.

    Returns:
        `path`.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 4.8))
    slo = next((s.slo_ms for s in steps if s.slo_ms), None)
    ordered = sorted(steps, key=lambda s: s.label)
    for label, group in groupby(ordered, key=lambda s: s.label):
        points = [s for s in sorted(group, key=_load_order) if not math.isnan(s.p99_ms)]
        if not points:
            continue
        x = [_rows_per_s(s) for s in points]
        raw = points[0].mode == "raw"
        name = f"{label} (per call)" if raw else label
        (line,) = left.plot(x, [s.p99_ms for s in points], "o-", label=f"{name} P99")
        color = line.get_color()
        left.plot(x, [s.p50_ms for s in points], "s--", color=color, label=f"{name} P50")
        if raw:
            # In-process points are batch sizes, not load levels: name them.
            for s, at in zip(points, x, strict=True):
                left.annotate(
                    f"b{s.rows_per_request}",
                    (at, s.p50_ms),
                    textcoords="offset points",
                    xytext=(0, -12),
                    ha="center",
                    fontsize="x-small",
                    color=color,
                )
            continue
        knee = _knee(points, slo, (knees or {}).get(label))
        if knee is not None:
            left.plot(_rows_per_s(knee), knee.p99_ms, "*", ms=18, color=color, mec="black")
        right.plot(
            [s.offered_rate or s.achieved_rate for s in points],
            [s.goodput for s in points],
            "o-",
            color=color,
            label=label,
        )
    if slo:
        left.axhline(slo, color="red", lw=1, ls=":", label=f"SLO {slo:g} ms")
    if ceiling:
        left.axvline(ceiling, color="gray", lw=1, ls="-.", label=f"in-process {ceiling:,.0f}/s")
    left.set(xlabel="throughput (samples/s)", ylabel="latency (ms)", yscale="log")
    # Plain numbers on the log axis: 2, 5, 10 read better than 2x10^0.
    left.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    left.yaxis.set_minor_formatter(NullFormatter())
    left.set_title("latency against throughput (★ = knee)")
    left.legend(fontsize="small")
    right.set(xlabel="offered load (requests/s)", ylabel="goodput (answers within SLO /s)")
    right.set_title("goodput against offered load")
    if right.lines:
        lim = max(max(line.get_xdata()) for line in right.lines)
        right.plot([0, lim], [0, lim], color="gray", lw=0.8, ls=":", label="all served in time")
        right.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _load_order(s: StepResult) -> float:
    """Steps in the order of their load: batch size, offered rate or clients."""
    if s.mode == "raw":
        return s.rows_per_request
    if s.offered_rate is not None:
        return s.offered_rate
    return s.concurrency or 0


def _knee(points: Sequence[StepResult], slo: float | None, rate: float | None) -> StepResult | None:
    """The step to mark as the knee of one curve."""
    if rate is not None:
        at = [
            s for s in points if s.offered_rate is not None and math.isclose(s.offered_rate, rate)
        ]
        if at:
            return at[0]
    if not slo:
        return None
    inside = [s for s in points if step_passes(s, slo)]
    return max(inside, key=_rows_per_s) if inside else None
