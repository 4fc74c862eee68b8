"""Shutdown and unloading answer what was admitted.

Each test runs its own small server: it stops or unloads what it serves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import EXTRA_MODELS, TidalServer, infer_input
from tritonclient.utils import InferenceServerException


@pytest.fixture
def small_repo(tmp_path: Path, server: TidalServer) -> Path:
    """`add_sub` and `delayed` (1 s batching delay) only."""
    root = tmp_path / "repository"
    for name in ("add_sub", "delayed"):
        (root / name).mkdir(parents=True)
        source = server.repo / name
        (root / name / "model.onnx").write_bytes((source / "model.onnx").read_bytes())
        (root / name / "tidal.toml").write_text((source / "tidal.toml").read_text())
    assert "max_queue_delay_us = 1000000" in EXTRA_MODELS["delayed"][1]
    return root


def _queue_one(
    client: grpcclient.InferenceServerClient,
) -> tuple[dict[str, np.ndarray], list[tuple[object, object, float]], threading.Event]:
    """Sends 2 rows to `delayed`, where they wait for the 1 s batching delay."""
    rng = np.random.default_rng(30)
    pair = {n: rng.standard_normal((2, 16), dtype=np.float32) for n in ("a", "b")}
    outcome: list[tuple[object, object, float]] = []
    done = threading.Event()

    def record(result: object, error: object) -> None:
        outcome.append((result, error, time.monotonic()))
        done.set()

    client.async_infer("delayed", [infer_input(n, a) for n, a in pair.items()], record)
    time.sleep(0.2)
    assert not done.is_set()
    return pair, outcome, done


def test_sigterm_answers_admitted_requests_and_exits_0(
    small_repo: Path, server_factory: Callable[..., TidalServer]
) -> None:
    s = server_factory(small_repo, "--no-metrics")
    client = grpcclient.InferenceServerClient(s.grpc)
    try:
        pair, outcome, done = _queue_one(client)
        s.terminate()
        assert done.wait(10)
        ((result, error, _),) = outcome
        assert error is None, error
        np.testing.assert_array_equal(result.as_numpy("sum"), pair["a"] + pair["b"])
        assert s.process.wait(30) == 0, s.stderr()
        assert "SIGTERM" in s.stderr()
        with pytest.raises(InferenceServerException) as info:
            client.is_server_live(client_timeout=5)
        assert info.value.status() == "StatusCode.UNAVAILABLE"
    finally:
        client.close()


def test_shutdown_dispatches_what_waits_for_a_batch(
    small_repo: Path, server_factory: Callable[..., TidalServer]
) -> None:
    """With a grace period (0.4 s) shorter than `delayed`'s batching delay (1 s), an
    admitted request is still answered: on shutdown nothing more will come to fill its
    batch, so waiting for the delay is pointless."""
    s = server_factory(small_repo, "--no-metrics", "--grace-period", "0.4")
    client = grpcclient.InferenceServerClient(s.grpc)
    try:
        pair, outcome, done = _queue_one(client)
        stopped_at = time.monotonic()
        s.terminate()
        assert done.wait(10)
        assert s.process.wait(30) == 0, s.stderr()
        ((result, error, answered_at),) = outcome
        assert answered_at - stopped_at < 0.4
        assert error is None, error
        np.testing.assert_array_equal(result.as_numpy("sum"), pair["a"] + pair["b"])
    finally:
        client.close()


def test_unload_answers_admitted_requests(
    small_repo: Path, server_factory: Callable[..., TidalServer]
) -> None:
    s = server_factory(small_repo, "--no-metrics")
    client = grpcclient.InferenceServerClient(s.grpc)
    try:
        pair, outcome, done = _queue_one(client)
        client.unload_model("delayed")
        assert done.wait(10)
        ((result, error, _),) = outcome
        assert error is None, error
        np.testing.assert_array_equal(result.as_numpy("diff"), pair["a"] - pair["b"])
        assert client.is_model_ready("delayed") is False
        assert client.is_model_ready("add_sub") is True
    finally:
        client.close()
