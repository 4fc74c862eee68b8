"""The adaptive scheduler over real gRPC: deadlines honoured before compute,
cancellation, priorities, admission control, and the statistics that show it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import TidalServer, assert_add_sub_serves, infer_input
from tidal import _core
from tidal._proto import grpc_service_pb2 as pb
from tidal.bench import make_workload
from tidal.client import Client
from tritonclient.utils import InferenceServerException

TOKENS = (1, 128)


def _stats(server: TidalServer, model: str) -> pb.ModelStatistics:
    """ModelStatistics through tidal's own stubs, which know the priority figures."""
    with Client(server.grpc) as client:
        (stats,) = client.stub.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats
    return stats


def _tokens(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, TOKENS, dtype=np.int64)


def _flood(
    client: grpcclient.InferenceServerClient, model: str, count: int, priority: int = 0
) -> tuple[list[str], threading.Semaphore, list[object]]:
    """Queue `count` requests asynchronously; returns (completion order, done, errors)."""
    order: list[str] = []
    errors: list[object] = []
    done = threading.Semaphore(0)

    def callback(name: str):
        def record(result: object, error: object) -> None:
            if error is not None:
                errors.append(error)
            order.append(name)
            done.release()

        return record

    for i in range(count):
        client.async_infer(
            model,
            [infer_input("tokens", _tokens(i))],
            callback(f"p{priority}-{i}"),
            priority=priority,
        )
    return order, done, errors


def test_one_ms_deadline_behind_a_loaded_queue_is_never_computed(server: TidalServer) -> None:
    """A request with a 1 ms gRPC deadline behind ~30 ms of queued work gets
    DEADLINE_EXCEEDED, and the model never sees it."""
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        before = _stats(server, "slow_adaptive")
        _, done, errors = _flood(client, "slow_adaptive", 20)
        with pytest.raises(InferenceServerException) as info:
            client.infer(
                "slow_adaptive", [infer_input("tokens", _tokens(99))], client_timeout=0.001
            )
        assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        for _ in range(20):
            assert done.acquire(timeout=30)
        assert errors == []
        deadline = time.monotonic() + 5
        while True:
            after = _stats(server, "slow_adaptive")
            lane, lane_before = after.priority_stats[0], before.priority_stats[0]
            gone = (
                lane.refused
                + lane.expired
                + lane.cancelled
                - lane_before.refused
                - lane_before.expired
                - lane_before.cancelled
            )
            if gone >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        # With a 1 ms deadline on a loaded machine the client may give up
        # before the request leaves it; if it reached the server, the server
        # refused or dropped it: either way it is accounted for.
        seen = lane.admitted + lane.refused - lane_before.admitted - lane_before.refused
        assert seen in (20, 21), after.priority_stats
        assert gone == seen - 20, after.priority_stats
        # Only the 20 flooded images reached the model.
        assert after.inference_count - before.inference_count == 20
        assert lane.completed - lane_before.completed == 20
    finally:
        client.close()


def test_a_cancelled_streaming_request_is_removed(server: TidalServer) -> None:
    """A request waiting in `delayed`'s queue (1 s batching delay) whose stream the
    client cancels is dropped without being computed."""
    client = grpcclient.InferenceServerClient(server.grpc)
    before = _stats(server, "delayed")
    answers: list[tuple[object, object]] = []
    client.start_stream(callback=lambda result, error: answers.append((result, error)))
    a = np.ones((2, 16), np.float32)
    client.async_stream_infer("delayed", [infer_input("a", a), infer_input("b", a)], request_id="x")
    time.sleep(0.1)
    client.stop_stream(cancel_requests=True)
    deadline = time.monotonic() + 5
    while True:
        after = _stats(server, "delayed")
        cancelled = after.priority_stats[0].cancelled - before.priority_stats[0].cancelled
        if cancelled >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    client.close()
    assert cancelled == 1
    assert after.execution_count == before.execution_count
    assert after.inference_count == before.inference_count
    assert not any(result is not None for result, _ in answers)


def test_priority_one_overtakes_priority_two_in_a_loaded_queue(server: TidalServer) -> None:
    """30 batch-priority requests queue up; 5 online ones sent after them finish first."""
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        order, done, errors = _flood(client, "slow_adaptive", 30, priority=2)
        time.sleep(0.002)
        _, online_done, online_errors = _flood(client, "slow_adaptive", 5, priority=1)
        for _ in range(5):
            assert online_done.acquire(timeout=30)
        batch_done_by_then = len(order)
        for _ in range(30):
            assert done.acquire(timeout=30)
        assert errors == []
        assert online_errors == []
        # The online requests overtook most of the batch requests queued before them.
        assert batch_done_by_then <= 20, f"{batch_done_by_then} of 30 batch requests went first"
    finally:
        client.close()


def test_time_unread_in_its_socket_counts_against_a_request(
    tmp_path: Path, server: TidalServer, server_factory: Callable[..., TidalServer]
) -> None:
    """A request's time starts when its bytes reach the server's socket, not
    when the server reads them: with the server stopped for 600 ms, a request
    with a 200 ms timeout is answered DEADLINE_EXCEEDED without being run,
    and one without a timeout is answered with the wait in its queue time."""
    root = tmp_path / "repository"
    (root / "add_sub").mkdir(parents=True)
    (root / "add_sub" / "model.onnx").write_bytes(
        (server.repo / "add_sub" / "model.onnx").read_bytes()
    )
    (root / "add_sub" / "tidal.toml").write_text(
        "max_batch_size = 8\n\n[batching]\nslo_ms = 30000\n"
    )
    s = server_factory(root, "--no-metrics")
    client = grpcclient.InferenceServerClient(s.grpc)
    try:
        # The connection is open and the model warm before the server stops.
        assert_add_sub_serves(client)
        before = _stats(s, "add_sub")
        rows = np.ones((1, 16), dtype=np.float32)
        inputs = [infer_input("a", rows), infer_input("b", rows)]
        outcomes: dict[str, object] = {}
        done = threading.Semaphore(0)

        def record(name: str) -> Callable[[object, object], None]:
            def store(result: object, error: object) -> None:
                outcomes[name] = error if error is not None else result
                done.release()

            return store

        os.kill(s.process.pid, signal.SIGSTOP)
        try:
            client.async_infer("add_sub", inputs, record("timed"), timeout=200_000)
            client.async_infer("add_sub", inputs, record("untimed"))
            time.sleep(0.6)
        finally:
            os.kill(s.process.pid, signal.SIGCONT)
        for _ in range(2):
            assert done.acquire(timeout=30)
        timed, untimed = outcomes["timed"], outcomes["untimed"]
        assert isinstance(timed, InferenceServerException), timed
        assert timed.status() == "StatusCode.DEADLINE_EXCEEDED", timed
        assert isinstance(untimed, grpcclient.InferResult), untimed
        np.testing.assert_array_equal(untimed.as_numpy("sum"), rows + rows)
        after = _stats(s, "add_sub")
        assert after.inference_count - before.inference_count == 1
        lane, lane_before = after.priority_stats[0], before.priority_stats[0]
        assert lane.refused + lane.expired - lane_before.refused - lane_before.expired == 1
        queued_ns = after.inference_stats.queue.ns - before.inference_stats.queue.ns
        assert queued_ns >= 500_000_000, f"queued {queued_ns / 1e6:.1f} ms after a 600 ms stop"
    finally:
        client.close()


def test_overload_is_refused_at_once_and_the_admitted_meet_the_objective(
    server: TidalServer,
) -> None:
    """Offered far more than it can compute, `tight` (30 ms objective) refuses the
    excess at once with UNAVAILABLE naming the overload, and serves the rest."""
    workload = make_workload(server.grpc, "tight", count=16)
    result = _core.run_load(
        server.grpc,
        workload.requests,
        mode="open",
        rate=3000.0,
        warmup_s=0.2,
        duration_s=1.5,
        expected_outputs=workload.expected_outputs,
    )
    codes = result["code"]
    ok = result["latency_ms"][codes == 0]
    refused = int(np.count_nonzero(codes == grpc.StatusCode.UNAVAILABLE.value[0]))
    assert refused > 0, result["errors"]
    assert "overloaded" in result["error_examples"]["UNAVAILABLE"]
    assert ok.size > 0
    stats = _stats(server, "tight")
    lane = stats.priority_stats[0]
    assert lane.refused >= refused
    assert lane.end_to_end.count == lane.completed > 0
    # The admitted requests finish inside the objective, as the server measures
    # them (the client's own figure here includes a load generator sharing the
    # server's cores).
    assert lane.end_to_end.p50_us < 30_000, lane.end_to_end
    # The reserve admission learnt from late requests stays within its bounds.
    import urllib.request

    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    series = 'tidal_admission_reserve{model="tight",priority="1"}'
    line = next(x for x in text.splitlines() if x.startswith(series))
    assert 0.0 <= float(line.split()[-1]) <= 0.5, line
    # ModelStatistics reports the same reserve (no batch has run since).
    reserve = _stats(server, "tight").priority_stats[0].admission_reserve
    assert reserve == pytest.approx(float(line.split()[-1])), line


def test_statistics_report_priorities_and_the_fitted_cost(server: TidalServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        client.infer("slow_adaptive", [infer_input("tokens", _tokens(1))], priority=2)
    finally:
        client.close()
    stats = _stats(server, "slow_adaptive")
    assert [p.priority for p in stats.priority_stats] == [1, 2]
    batch_lane = stats.priority_stats[1]
    assert batch_lane.admitted >= 1
    assert batch_lane.completed >= 1
    assert 0 < batch_lane.end_to_end.p50_us <= batch_lane.end_to_end.max_us
    assert batch_lane.compute.count == batch_lane.completed
    # The warm-up profile fitted a positive cost before any request arrived.
    assert stats.batch_cost.fixed_us + stats.batch_cost.per_row_us > 0
    # A slow batch runs at least as long as a typical one, and the spread is bounded.
    assert 1.0 <= stats.batch_cost.tail_factor <= 3.0


def test_metrics_show_priorities(server: TidalServer) -> None:
    import urllib.request

    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        client.infer("slow_adaptive", [infer_input("tokens", _tokens(2))], priority=1)
    finally:
        client.close()
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert (
        'tidal_priority_requests_total{model="slow_adaptive",outcome="completed",priority="1"}'
        in text
    )
    assert (
        'tidal_priority_latency_seconds{model="slow_adaptive",priority="1",quantile="0.99",stage="end_to_end"}'
        in text
    )
    assert 'tidal_batch_cost_seconds{model="slow_adaptive",term="fixed"}' in text
    assert 'tidal_batch_cost_tail_factor{model="slow_adaptive"}' in text
    assert 'tidal_admission_reserve{model="slow_adaptive",priority="1"}' in text
    assert 'tidal_admission_reserve{model="slow_adaptive",priority="2"}' in text


def test_repository_of_the_example_models_is_adaptive(repo: Path) -> None:
    from tidal.repository import ModelRepository

    spec = ModelRepository(repo).spec("mlp")
    assert (spec.policy, spec.slo_ms) == ("adaptive", 10.0)


def _network_thread_policies(pid: int) -> set[int]:
    """The scheduling policy of each of the server's network (`tidal-grpc`) threads."""
    policies = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == "tidal-grpc":
            policies.add(os.sched_getscheduler(int(task.name)))
    return policies


def test_network_threads_do_not_preempt_batches_unless_told_to(
    server: TidalServer, server_factory: Callable[..., TidalServer], tmp_path: Path
) -> None:
    assert _network_thread_policies(server.process.pid) == {os.SCHED_BATCH}
    (tmp_path / "add_sub").mkdir()
    (tmp_path / "add_sub" / "model.onnx").write_bytes(
        (server.repo / "add_sub" / "model.onnx").read_bytes()
    )
    normal = server_factory(tmp_path, "--no-metrics", "--network-scheduling", "normal")
    assert _network_thread_policies(normal.process.pid) == {os.SCHED_OTHER}
    a, b = np.ones((2, 16), np.float32), np.arange(32, dtype=np.float32).reshape(2, 16)
    with Client(normal.grpc) as client:
        out = client.infer("add_sub", {"a": a, "b": b})
    np.testing.assert_array_equal(out["sum"], a + b)
