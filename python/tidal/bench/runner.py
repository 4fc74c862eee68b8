"""Runs load steps against a server and reads its batch statistics around each."""

from __future__ import annotations

import grpc

from .. import _core
from .._proto import grpc_service_pb2 as pb
from ..client import Client
from .stats import StepResult, summarize
from .workload import Workload

__all__ = ["batch_counters", "run_step"]


def batch_counters(target: str, model: str) -> tuple[int, int] | None:
    """(inference_count, execution_count) of `model`, or None if the server has no statistics."""
    try:
        with Client(target) as client:
            response = client.stub.ModelStatistics(pb.ModelStatisticsRequest(name=model))
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
    api: str = "unary",
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    slo_ms: float | None = None,
    connections: int = 4,
    seed: int = 0,
    label: str = "",
) -> StepResult:
    """Drive `target` with one load level and summarize it.

    The mean batch size is the server's own count of samples per executed
    batch over the step (warm-up included), when it reports statistics.
    """
    before = batch_counters(target, workload.model)
    result = _core.run_load(
        target,
        workload.requests,
        mode=mode,
        concurrency=concurrency,
        rate=rate,
        api=api,
        connections=connections,
        warmup_s=warmup_s,
        duration_s=duration_s,
        expected_outputs=workload.expected_outputs,
        seed=seed,
    )
    after = batch_counters(target, workload.model)
    mean_batch = None
    if before and after and after[1] > before[1]:
        mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    return summarize(
        result,
        label=label or workload.model,
        mode=mode,
        offered_rate=rate if mode == "open" else None,
        concurrency=concurrency if mode == "closed" else None,
        slo_ms=slo_ms,
        mean_batch_size=mean_batch,
    )
