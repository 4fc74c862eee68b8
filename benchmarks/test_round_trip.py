"""One request through tidal's core, from the Rust load generator and back:
gRPC decode, validation, queue, batch assembly, one Python call per batch,
split and encode. Beside it, the same through the echo server that answers
at once: the difference is what tidal adds to the gRPC floor.

Each round sends a fixed number of requests on one connection (closed loop),
so the time per round divided by `REQUESTS` is the time per request. Run
with `make bench` (pytest-benchmark; off in `make test`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from tidal import _core
from tidal.client import build_request

REQUESTS = 2000
"""Requests per round."""


def identity(
    inputs: dict[str, npt.NDArray[np.generic]], outputs: list[str]
) -> list[npt.NDArray[np.generic]]:
    """The cheapest executor: the input comes back as the output."""
    return [inputs["x"] for _ in outputs]


@pytest.fixture(scope="module")
def tidal_target() -> Iterator[str]:
    server = _core.Server(host="127.0.0.1", port=0, runtime_threads=1)
    port = server.start()
    tensor = [_core.TensorSpec("x", "FP32", [16])]
    spec = _core.ModelSpec(
        "identity", tensor, [_core.TensorSpec("y", "FP32", [16])], max_batch_size=64
    )
    server.add_model(spec, [identity])
    server.set_ready(True)
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def echo_target() -> Iterator[str]:
    echo = _core.EchoServer(model="identity", shape=[16], max_batch_size=64)
    port = echo.start()
    yield f"127.0.0.1:{port}"
    echo.stop()


@pytest.mark.benchmark(group="round trip, per 2000 requests")
@pytest.mark.parametrize("server", ["tidal", "echo"])
@pytest.mark.parametrize("in_flight", [1, 16])
def test_round_trip(
    benchmark: BenchmarkFixture, request: pytest.FixtureRequest, server: str, in_flight: int
) -> None:
    target = request.getfixturevalue(f"{server}_target")
    payload = build_request("identity", {"x": np.ones((1, 16), np.float32)})

    def round_of_requests() -> _core.LoadResult:
        return _core.run_load(
            target,
            [payload.SerializeToString()],
            mode="closed",
            concurrency=in_flight,
            connections=1,
            warmup_s=0.0,
            duration_s=60.0,
            max_requests=REQUESTS,
        )

    result = benchmark.pedantic(round_of_requests, rounds=5, warmup_rounds=1)
    assert result["errors"] == {}
    assert len(result["latency_ms"]) == REQUESTS
    benchmark.extra_info["us_per_request"] = benchmark.stats.stats.median / REQUESTS * 1e6
