"""Tables of benchmark steps, for the terminal."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from .stats import StepResult

__all__ = [
    "print_classes",
    "print_comparison",
    "print_generator",
    "print_raw",
    "print_table",
]


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _console(console: Console | None) -> Console:
    # Piped output would otherwise wrap the tables at 80 columns.
    return console or Console(width=max(Console().width, 160))


def _load(s: StepResult) -> str:
    if s.mode == "closed":
        return f"{s.concurrency} in flight"
    if s.mode == "raw":
        return f"batch {s.rows_per_request}"
    rate = f"{s.offered_rate:,.0f}/s" if s.offered_rate is not None else "-"
    if s.arrivals and s.arrivals != "poisson":
        rate += f" {s.arrivals}"
    return rate


def _errors(s: StepResult) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(s.errors.items())) or "-"


def _little(s: StepResult) -> str:
    if s.little_ratio is None:
        return "-"
    return f"{s.measured_in_flight:,.1f}/{s.little_in_flight:,.1f}"


def print_table(steps: Sequence[StepResult], title: str, console: Console | None = None) -> None:
    """One row per step: load, rates, latency percentiles, the server's mean
    batch size, the Little's law check (L, the mean number of requests in
    flight as the generator counted it, against λW, answers per second times
    their mean time in flight: equal in a steady state), the fraction of the
    in-process ceiling when known, and errors by gRPC code. What the
    generator sent is in `print_generator`."""
    ceiling = any(s.ceiling_fraction is not None for s in steps)
    table = Table(title=title)
    names = ["step", "load", "answers/s", "goodput/s"]
    names += ["P50 ms", "P90 ms", "P99 ms", "P99.9 ms", "max ms", "batch", "L / λW"]
    if ceiling:
        names.append("ceiling")
    for name in names:
        table.add_column(name, justify="left" if name == "step" else "right")
    table.add_column("errors", justify="left")
    for s in steps:
        row = [
            s.label,
            _load(s),
            _fmt(s.throughput, 0),
            _fmt(s.goodput, 0),
            _fmt(s.p50_ms),
            _fmt(s.p90_ms),
            _fmt(s.p99_ms),
            _fmt(s.p999_ms),
            _fmt(s.max_ms),
            _fmt(s.mean_batch_size, 1),
            _little(s),
        ]
        if ceiling:
            fraction = s.ceiling_fraction
            row.append("-" if fraction is None else f"{fraction:.0%}")
        row.append(_errors(s))
        table.add_row(*row)
    _console(console).print(table)


def print_generator(steps: Sequence[StepResult], console: Console | None = None) -> None:
    """The load generator's own timing error per step: rate sent against
    rate asked for, how late sends were, and how long answers waited in its
    sockets before it took them."""
    table = Table(title="load generator: its own timing error")
    for name in ("step", "load", "intended/s", "sent/s", "sent / intended"):
        table.add_column(name, justify="left" if name == "step" else "right")
    for name in ("send lag P50 ms", "P99 ms", "max ms"):
        table.add_column(name, justify="right")
    for name in ("receive lag P50 ms", "P99 ms", "max ms"):
        table.add_column(name, justify="right")
    for s in steps:
        ratio = s.achieved_rate / s.intended_rate if s.intended_rate else None
        table.add_row(
            s.label,
            _load(s),
            _fmt(s.intended_rate, 0),
            _fmt(s.achieved_rate, 0),
            "-" if ratio is None else f"{ratio:.2%}",
            _fmt(s.send_lag_p50_ms, 3),
            _fmt(s.send_lag_p99_ms, 3),
            _fmt(s.send_lag_max_ms, 3),
            _fmt(s.receive_lag_p50_ms, 3),
            _fmt(s.receive_lag_p99_ms, 3),
            _fmt(s.receive_lag_max_ms, 3),
        )
    _console(console).print(table)


def print_classes(steps: Sequence[StepResult], console: Console | None = None) -> None:
    """Per traffic class, for the steps that had several."""
    rows = [(s, c) for s in steps for c in s.classes]
    if not rows:
        return
    table = Table(title="per traffic class")
    names = ["step", "load", "class", "sent", "answers/s", "goodput/s", "SLO ms"]
    names += ["P50 ms", "P99 ms", "max ms"]
    for name in names:
        table.add_column(name, justify="left" if name in ("step", "class") else "right")
    table.add_column("errors", justify="left")
    for s, c in rows:
        table.add_row(
            s.label,
            _load(s),
            c.name,
            f"{c.sent:,}",
            _fmt(c.throughput, 0),
            _fmt(c.goodput, 0),
            _fmt(c.slo_ms, 1),
            _fmt(c.p50_ms),
            _fmt(c.p99_ms),
            _fmt(c.max_ms),
            ", ".join(f"{k} {v:,}" for k, v in sorted(c.errors.items())) or "-",
        )
    _console(console).print(table)


def print_comparison(
    pairs: Sequence[tuple[StepResult, StepResult]], console: Console | None = None
) -> None:
    """B against A, step by step: the ratios of throughput, goodput and P99."""
    if not pairs:
        return
    a_label, b_label = pairs[0][0].label, pairs[0][1].label
    table = Table(title=f"{b_label} / {a_label}, measured interleaved")
    for name in ("load", "answers/s", "goodput/s", "P50", "P99"):
        table.add_column(name, justify="right")

    def ratio(b: float, a: float) -> str:
        if not a or math.isnan(a) or math.isnan(b):
            return "-"
        return f"{b / a:.2f}x"

    for a, b in pairs:
        table.add_row(
            _load(a),
            ratio(b.throughput, a.throughput),
            ratio(b.goodput, a.goodput),
            ratio(b.p50_ms, a.p50_ms),
            ratio(b.p99_ms, a.p99_ms),
        )
    _console(console).print(table)


def print_raw(steps: Sequence[StepResult], title: str, console: Console | None = None) -> None:
    """The in-process ceiling: rows per second and call latency per batch size."""
    table = Table(title=title)
    for name in ("batch", "calls/s", "rows/s", "P50 ms", "P99 ms", "max ms"):
        table.add_column(name, justify="right")
    best = max((s.throughput for s in steps), default=0.0)
    for s in steps:
        mark = " *" if s.throughput == best else ""
        table.add_row(
            f"{s.rows_per_request}",
            _fmt(s.achieved_rate, 0),
            _fmt(s.throughput, 0) + mark,
            _fmt(s.p50_ms, 3),
            _fmt(s.p99_ms, 3),
            _fmt(s.max_ms, 3),
        )
    table.caption = "* the ceiling: the most rows per second"
    _console(console).print(table)
