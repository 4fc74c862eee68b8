"""Request encoding and response decoding in Python: what a client pays per
call before and after the network (`tidal.client`, the generated stubs).

Run with `make bench` (pytest-benchmark; off in `make test`)."""

from __future__ import annotations

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from tidal._proto import grpc_service_pb2 as pb
from tidal.client import build_request, decode_response, from_raw, to_raw

pytestmark = pytest.mark.benchmark(group="codec")


@pytest.mark.parametrize("rows", [1, 64])
def test_encode_request(benchmark: BenchmarkFixture, rows: int) -> None:
    x = np.random.default_rng(0).standard_normal((rows, 512), dtype=np.float32)
    data = benchmark(lambda: build_request("mlp", {"x": x}).SerializeToString())
    assert len(data) > x.nbytes


@pytest.mark.parametrize("rows", [1, 64])
def test_decode_response(benchmark: BenchmarkFixture, rows: int) -> None:
    y = np.random.default_rng(0).standard_normal((rows, 128), dtype=np.float32)
    response = pb.ModelInferResponse(model_name="mlp")
    response.outputs.add(name="y", datatype="FP32", shape=y.shape)
    response.raw_output_contents.append(to_raw(y))
    data = response.SerializeToString()
    out = benchmark(lambda: decode_response(pb.ModelInferResponse.FromString(data)))
    assert np.array_equal(out["y"], y)


def test_bytes_tensor_round_trip(benchmark: BenchmarkFixture) -> None:
    words = np.array([f"token-{i}".encode() for i in range(256)], dtype=object)
    out = benchmark(lambda: from_raw(to_raw(words), "BYTES", words.shape))
    assert list(out) == list(words)
