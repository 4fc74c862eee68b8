"""Tables of benchmark steps, for the terminal."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from .stats import StepResult

__all__ = ["print_table"]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(steps: Sequence[StepResult], title: str, console: Console | None = None) -> None:
    """Print one row per step: load, throughput, latency percentiles, batch size, errors."""
    table = Table(title=title)
    for name in ("step", "load", "req/s", "goodput/s", "P50 ms", "P90 ms", "P99 ms", "max ms"):
        table.add_column(name, justify="right" if name != "step" else "left")
    table.add_column("mean batch", justify="right")
    table.add_column("errors", justify="left")
    for s in steps:
        load = f"{s.concurrency} in flight" if s.mode == "closed" else f"{s.offered_rate:,.0f}/s"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "-"
        table.add_row(
            s.label,
            load,
            _fmt(s.throughput, 0),
            _fmt(s.goodput, 0),
            _fmt(s.p50_ms),
            _fmt(s.p90_ms),
            _fmt(s.p99_ms),
            _fmt(s.max_ms),
            _fmt(s.mean_batch_size, 1),
            errors,
        )
    # Piped output would otherwise wrap the table at 80 columns.
    (console or Console(width=max(Console().width, 120))).print(table)
