"""The latency-throughput picture of a benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed

import matplotlib.pyplot as plt  # after the backend is chosen

from .stats import StepResult

__all__ = ["plot_steps"]


def plot_steps(steps: Sequence[StepResult], path: Path, *, title: str = "") -> Path:
    """P50 and P99 against achieved throughput, one curve per label, the SLO as a
    line and the knee (highest throughput with P99 within the SLO) marked; and
    goodput against offered load. Returns `path`."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    slo = next((s.slo_ms for s in steps if s.slo_ms), None)
    ordered = sorted(steps, key=lambda s: s.label)
    for label, group in groupby(ordered, key=lambda s: s.label):
        points = sorted(group, key=lambda s: s.throughput)
        x = [s.throughput for s in points]
        (line,) = left.plot(x, [s.p99_ms for s in points], "o-", label=f"{label} P99")
        left.plot(
            x, [s.p50_ms for s in points], "s--", color=line.get_color(), label=f"{label} P50"
        )
        if slo:
            inside = [s for s in points if s.p99_ms <= slo]
            if inside:
                knee = max(inside, key=lambda s: s.throughput)
                left.plot(knee.throughput, knee.p99_ms, "*", ms=16, color=line.get_color())
        offered = [s.offered_rate or s.achieved_rate for s in points]
        right.plot(offered, [s.goodput for s in points], "o-", color=line.get_color(), label=label)
    if slo:
        left.axhline(slo, color="red", lw=1, ls=":", label=f"SLO {slo:g} ms")
    left.set(xlabel="throughput (answers/s)", ylabel="latency (ms)", yscale="log")
    left.set_title("latency against throughput (* = knee)")
    left.legend(fontsize="small")
    right.set(xlabel="offered load (requests/s)", ylabel="goodput (answers within SLO /s)")
    right.set_title("goodput against offered load")
    right.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
