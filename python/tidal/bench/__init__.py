"""`tidal bench`: measure the latency-throughput trade-off of any KServe v2 gRPC server.

The load generator is Rust (`tidal._core.run_load`); this package builds the
requests, runs the steps, and reports.
"""

from .report import print_table
from .runner import batch_counters, run_step
from .stats import StepResult, summarize
from .workload import Workload, make_workload

__all__ = [
    "StepResult",
    "Workload",
    "batch_counters",
    "make_workload",
    "print_table",
    "run_step",
    "summarize",
]
