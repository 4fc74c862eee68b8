"""`make demo`: serve the example models, drive load, print what it gave."""

from __future__ import annotations

from rich.console import Console

from .bench import StepResult, make_workload, print_table, run_step
from .bench.launch import ServerProcess
from .bench.progress import StepProgress

__all__ = ["run_demo"]

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
    failed = sum(sum(s.errors.values()) for s in steps)
    return 1 if failed else 0
