"""`make demo`: serve the example models, drive load, print what it gave."""

from __future__ import annotations

from rich.console import Console

from .bench import StepResult, make_workload, print_table, run_step
from .bench.launch import ServerProcess
from .bench.progress import StepProgress

__all__ = ["SHED", "faults", "run_demo"]

# The codes with which the scheduler sheds what it cannot serve within the
# objective: refused at once (UNAVAILABLE) or dropped before computing
# (DEADLINE_EXCEEDED). On a machine that stalls for longer than the
# objective a few are expected; the table shows them, and they are not
# faults.
SHED = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE"})

# (model, requests in flight): one request at a time shows the latency floor,
# many in flight show what batching makes of the same model.
_STEPS = [("mlp", 1), ("mlp", 64), ("cnn", 1), ("cnn", 32), ("transformer", 1), ("transformer", 8)]


def run_demo(duration_s: float = 3.0, warmup_s: float = 1.0) -> int:
    """Start `tidal serve` on the example models, measure each, print a table, stop."""
    console = Console(width=max(Console().width, 160))
    with ServerProcess() as server:
        console.print(f"tidal serves the example models on {server.target}")
        steps: list[StepResult] = []
        progress = StepProgress(console)
        workloads = {}
        for model, in_flight in _STEPS:
            if model not in workloads:
                workloads[model] = make_workload(server.target, model)
            console.print(f"  {model}: {in_flight} request(s) in flight for {duration_s:g} s ...")
            steps.append(
                run_step(
                    server.target,
                    workloads[model],
                    concurrency=in_flight,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                    progress=progress,
                )
            )
    print_table(steps, "tidal: latency and throughput of the example models (closed loop)", console)
    shed = sum(n for s in steps for code, n in s.errors.items() if code in SHED)
    if shed:
        console.print(
            f"{shed} request(s) were shed (refused or dropped before computing) because"
            " they could not be answered within their model's objective on this machine."
        )
    return 1 if faults(steps) else 0


def faults(steps: list[StepResult]) -> dict[str, int]:
    """The errors of `steps` that mean something is broken (wrong answers,
    no answer, transport or server failures), by code: every error but the
    scheduler's shedding (`SHED`)."""
    found: dict[str, int] = {}
    for step in steps:
        for code, n in step.errors.items():
            if code not in SHED:
                found[code] = found.get(code, 0) + n
    return found
