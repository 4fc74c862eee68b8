"""`tidal bench`: measure the latency-throughput trade-off of any KServe v2 gRPC server.

The load generator is Rust (`tidal._core.LoadRun`); this package builds the
requests, runs the steps (one load level each), finds the knee, measures the
in-process ceiling, and reports: tables, `results.json` and a plot.
"""

from .launch import EchoProcess, ServerProcess
from .raw import measure_raw, resolve_model
from .report import print_table
from .runner import LoadSpec, batch_counters, run_step
from .stats import ClassFigures, StepResult, histogram, summarize
from .sweep import KneeSearch, step_passes
from .workload import TrafficClass, Workload, make_workload

__all__ = [
    "ClassFigures",
    "EchoProcess",
    "KneeSearch",
    "LoadSpec",
    "ServerProcess",
    "StepResult",
    "TrafficClass",
    "Workload",
    "batch_counters",
    "histogram",
    "make_workload",
    "measure_raw",
    "print_table",
    "resolve_model",
    "run_step",
    "step_passes",
    "summarize",
]
