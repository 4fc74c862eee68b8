"""A live progress bar for a load step: elapsed time, current rate and P99."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .. import _core

__all__ = ["StepProgress"]

_POLL_S = 0.25
"""How often the bar reads the generator's live counters."""


class StepProgress:
    """Shows each step's progress on `console` while the load generator runs.

    On a console that is not a terminal (a pipe, a CI log) nothing is drawn:
    the steps' tables say everything afterwards.
    """

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled and console.is_terminal

    def watch(self, run: _core.LoadRun, description: str, total_s: float) -> None:
        """Poll `run` until it ends, drawing its progress.

        KeyboardInterrupt propagates; the caller stops the run.
        """
        if not self.enabled:
            run.wait()
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=max(total_s, 1e-3), status="connecting")
            while not run.wait(_POLL_S):
                live = run.progress()
                p99 = live["recent_p99_ms"]
                status = (
                    f"{live['phase']:>9}  {live['recent_rate']:>9,.0f}/s"
                    f"  P99 {'-' if math.isnan(p99) else f'{p99:,.2f}'} ms"
                    f"  errors {live['errors']:,}"
                )
                bar.update(task, completed=min(live["elapsed_s"], total_s), status=status)
