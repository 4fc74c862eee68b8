"""Bad requests get a clear gRPC error, and the server keeps serving.

Each error is checked for its status code and for a message that names the
tensor (or model) and what is wrong; after each, a valid request succeeds.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from helpers import TidalServer, assert_add_sub_serves, infer_input, reference
from tidal._proto import grpc_service_pb2 as pb
from tidal.client import STREAM_ERROR_CODE, Client, build_request, decode_response
from tritonclient.utils import InferenceServerException


@pytest.fixture
def stub(server: TidalServer) -> Iterator[Client]:
    """tidal's own grpcio client, for requests tritonclient cannot build."""
    with Client(server.grpc) as c:
        yield c


def _pair(rows: int = 1, width: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows * 100 + width)
    return {
        "a": rng.standard_normal((rows, width), dtype=np.float32),
        "b": rng.standard_normal((rows, width), dtype=np.float32),
    }


def _refused(stub: Client, request: pb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.stub.ModelInfer(request)
    return info.value


def assert_still_serves(stub: Client) -> None:
    """A valid request right after an error gets the right answer."""
    inputs = _pair(rows=2)
    outputs = decode_response(stub.stub.ModelInfer(build_request("add_sub", inputs)))
    np.testing.assert_array_equal(outputs["sum"], inputs["a"] + inputs["b"])
    np.testing.assert_array_equal(outputs["diff"], inputs["a"] - inputs["b"])


def _infer_together(
    client: grpcclient.InferenceServerClient, model: str, calls: list[tuple[str, list[Any]]]
) -> dict[str, tuple[Any, Any]]:
    """Sends every (key, inputs) to `model` at once, in order, and waits for
    every answer: by key, (result, None) or (None, error)."""
    results: dict[str, tuple[Any, Any]] = {}
    done = threading.Semaphore(0)

    def callback(key: str) -> Callable[[object, object], None]:
        def record(result: object, error: object) -> None:
            results[key] = (result, error)
            done.release()

        return record

    for key, inputs in calls:
        client.async_infer(model, inputs, callback(key))
    for _ in calls:
        assert done.acquire(timeout=10)
    return results


# ---------------------------------------------------------------- unknown models


@pytest.mark.parametrize(
    ("model", "version", "named"),
    [("no_such_model", "", "`no_such_model`"), ("add_sub", "7", "`7`")],
)
def test_unknown_model_or_version_is_not_found(
    stub: Client, model: str, version: str, named: str
) -> None:
    request = build_request(model, _pair())
    request.model_version = version
    error = _refused(stub, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert named in error.details()
    assert_still_serves(stub)


def test_unknown_model_through_tritonclient(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones((1, 16), np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("no_such_model", [infer_input("a", a), infer_input("b", a)])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "no_such_model" in info.value.message()
    assert_add_sub_serves(client)


# ---------------------------------------------------------------- request validation


def _missing_input() -> pb.ModelInferRequest:
    return build_request("add_sub", {"a": _pair()["a"]})


def _unknown_input() -> pb.ModelInferRequest:
    return build_request("add_sub", {**_pair(), "c": np.ones((1, 16), np.float32)})


def _wrong_datatype() -> pb.ModelInferRequest:
    return build_request("add_sub", {"a": _pair()["a"], "b": np.ones((1, 16), np.float64)})


def _wrong_shape() -> pb.ModelInferRequest:
    return build_request("add_sub", {"a": _pair()["a"], "b": np.ones((1, 15), np.float32)})


def _wrong_rank() -> pb.ModelInferRequest:
    return build_request("add_sub", {"a": _pair()["a"], "b": np.ones((1, 4, 4), np.float32)})


def _batches_disagree() -> pb.ModelInferRequest:
    return build_request("add_sub", {"a": _pair(rows=2)["a"], "b": _pair(rows=3)["b"]})


def _short_raw_contents() -> pb.ModelInferRequest:
    request = build_request("add_sub", _pair())
    request.raw_input_contents[1] = request.raw_input_contents[1][:-4]
    return request


def _long_raw_contents() -> pb.ModelInferRequest:
    request = build_request("add_sub", _pair())
    request.raw_input_contents[0] += b"\0" * 4
    return request


def _bad_bytes_element() -> pb.ModelInferRequest:
    # One BYTES element claims 100 bytes but carries 3.
    request = build_request("identity_all", _identity_inputs())
    index = [t.name for t in request.inputs].index("in_BYTES")
    request.raw_input_contents[index] = (100).to_bytes(4, "little") + b"abc"
    return request


def _over_max_batch() -> pb.ModelInferRequest:
    return build_request("add_sub", _pair(rows=9))


def _zero_batch() -> pb.ModelInferRequest:
    return build_request("add_sub", _pair(rows=0))


def _raw_and_typed() -> pb.ModelInferRequest:
    inputs = _pair()
    request = build_request("add_sub", inputs)
    request.inputs[1].contents.fp32_contents.extend(inputs["b"].ravel().tolist())
    return request


def _typed_fp16() -> pb.ModelInferRequest:
    # FP16 has no typed field: it can only travel raw.
    request = pb.ModelInferRequest(model_name="identity_all")
    request.inputs.add(name="in_FP16", datatype="FP16", shape=[1, 4])
    return request


def _typed_count_mismatch() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="add_sub")
    for name in ("a", "b"):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        tensor.contents.fp32_contents.extend([1.0] * (16 if name == "a" else 15))
    return request


def _unknown_output() -> pb.ModelInferRequest:
    return build_request("add_sub", _pair(), outputs=["product"])


def _priority_out_of_range() -> pb.ModelInferRequest:
    return build_request("add_sub", _pair(), priority=3)


def _datatype(name: str) -> str:
    return name.removeprefix("in_")


def _identity_inputs() -> dict[str, np.ndarray]:
    dtypes = {
        "BOOL": np.bool_,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
    }
    inputs = {f"in_{dt}": np.ones((1, 4), dtype) for dt, dtype in dtypes.items()}
    inputs["in_BYTES"] = np.array([[b"a", b"b", b"c", b"d"]], dtype=np.object_)
    return inputs


# (request builder, words the message must contain: the tensor and the mismatch)
INVALID = {
    "missing input": (_missing_input, ["missing input", "`b`"]),
    "unknown input": (_unknown_input, ["unknown input", "`c`"]),
    "wrong datatype": (_wrong_datatype, ["`b`", "`FP64`", "`FP32`"]),
    "wrong shape": (_wrong_shape, ["`b`", "[1, 15]", "[16]"]),
    "wrong rank": (_wrong_rank, ["`b`", "[1, 4, 4]", "[16]"]),
    "batch sizes disagree": (_batches_disagree, ["batch size", "`a`", "`b`"]),
    "raw bytes too short": (_short_raw_contents, ["`b`", "60 bytes", "64"]),
    "raw bytes too long": (_long_raw_contents, ["`a`", "68 bytes", "64"]),
    "malformed BYTES element": (_bad_bytes_element, ["`in_BYTES`"]),
    "batch over max_batch_size": (_over_max_batch, ["`a`", "batch size 9", "max_batch_size 8"]),
    "batch size zero": (_zero_batch, ["`a`", "batch size 0"]),
    "raw and typed mixed": (_raw_and_typed, ["`b`", "raw_input_contents", "typed contents"]),
    "FP16 as typed contents": (_typed_fp16, ["`in_FP16`", "raw_input_contents"]),
    "typed element count": (_typed_count_mismatch, ["`b`", "[1, 16]"]),
    "unknown output": (_unknown_output, ["unknown output", "`product`"]),
    "priority out of range": (_priority_out_of_range, ["priority `3`", "add_sub"]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_request_is_refused(stub: Client, case: str) -> None:
    build, words = INVALID[case]
    error = _refused(stub, build())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    for word in words:
        assert word in error.details(), f"{word!r} not in {error.details()!r}"
    assert_still_serves(stub)


def test_invalid_requests_are_counted_apart(stub: Client) -> None:
    """Malformed requests show in their model's `invalid` count, and in none
    of the counts of admitted or refused requests."""
    requests = [INVALID[case][0]() for case in sorted(INVALID)]
    sent = Counter(r.model_name for r in requests)

    def stats() -> dict[str, pb.ModelStatistics]:
        return {
            name: stub.stub.ModelStatistics(pb.ModelStatisticsRequest(name=name)).model_stats[0]
            for name in sent
        }

    before = stats()
    for request in requests:
        _refused(stub, request)
    after = stats()
    for name, count in sent.items():
        assert after[name].invalid - before[name].invalid == count, name
        lanes = zip(after[name].priority_stats, before[name].priority_stats, strict=True)
        for lane, lane_before in lanes:
            assert lane.admitted == lane_before.admitted
            assert lane.refused == lane_before.refused


def test_invalid_request_through_tritonclient(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones((1, 16), np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer(
            "add_sub", [infer_input("a", a), infer_input("b", np.ones((1, 15), np.float32))]
        )
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "`b`" in info.value.message()
    assert_add_sub_serves(client)


def test_typed_contents_without_raw_are_correct(stub: Client) -> None:
    inputs = _pair(rows=3)
    request = pb.ModelInferRequest(model_name="add_sub")
    for name, array in inputs.items():
        tensor = request.inputs.add(name=name, datatype="FP32", shape=array.shape)
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    outputs = decode_response(stub.stub.ModelInfer(request))
    np.testing.assert_array_equal(outputs["sum"], inputs["a"] + inputs["b"])
    np.testing.assert_array_equal(outputs["diff"], inputs["a"] - inputs["b"])


# ---------------------------------------------------------------- message size


def test_message_over_the_limit_is_resource_exhausted(
    server_factory: Callable[..., TidalServer], tmp_path: Path, server: TidalServer
) -> None:
    # A repository of one model: the session's repository would load every model again.
    small = tmp_path / "repository"
    (small / "mlp").mkdir(parents=True)
    (small / "mlp" / "model.onnx").write_bytes((server.repo / "mlp" / "model.onnx").read_bytes())
    limited = server_factory(small, "--max-message-bytes", "65536", "--no-metrics")
    assert limited.model_count == 1
    client = grpcclient.InferenceServerClient(limited.grpc)
    try:
        rng = np.random.default_rng(6)
        big = rng.standard_normal((64, 512), dtype=np.float32)  # 128 KiB of raw input
        with pytest.raises(InferenceServerException) as info:
            client.infer("mlp", [infer_input("x", big)])
        assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "65536" in info.value.message()
        # A request under the limit is still served, and right.
        small_batch = big[:8]
        result = client.infer("mlp", [infer_input("x", small_batch)])
        np.testing.assert_allclose(
            result.as_numpy("y"),
            reference(server.repo, "mlp", {"x": small_batch})["y"],
            rtol=1e-4,
            atol=1e-5,
        )
    finally:
        client.close()


# ---------------------------------------------------------------- overload


def test_full_queue_is_unavailable(client: grpcclient.InferenceServerClient) -> None:
    """`tiny_queue` admits one request and holds it 400 ms: a burst overflows it."""
    burst = 12
    inputs = [_pair(rows=1 + i % 4, width=16) for i in range(burst)]
    results = _infer_together(
        client,
        "tiny_queue",
        [(str(i), [infer_input(n, a) for n, a in pair.items()]) for i, pair in enumerate(inputs)],
    )
    refused = [error for _, error in results.values() if error is not None]
    served = [(int(i), result) for i, (result, error) in results.items() if error is None]
    assert refused, "no request was refused"
    assert served, "no request was served"
    for error in refused:
        assert error.status() == "StatusCode.UNAVAILABLE", error
        assert "overloaded" in error.message()
        assert "tiny_queue" in error.message()
    for i, result in served:
        np.testing.assert_array_equal(result.as_numpy("sum"), inputs[i]["a"] + inputs[i]["b"])
    # Once the queue has room again, requests are admitted.
    assert_add_sub_serves(client, "tiny_queue")
    assert_add_sub_serves(client)


# ---------------------------------------------------------------- deadlines


def _model_stats(client: grpcclient.InferenceServerClient, model: str) -> object:
    (stats,) = client.get_inference_statistics(model).model_stats
    return stats


def _wait_for_failures(client: grpcclient.InferenceServerClient, model: str, count: int) -> object:
    deadline = time.monotonic() + 10
    while True:
        stats = _model_stats(client, model)
        if stats.inference_stats.fail.count >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def test_client_deadline_behind_a_queued_request(client: grpcclient.InferenceServerClient) -> None:
    """In `delayed` (1 s batching delay), a request with a 300 ms gRPC deadline queued
    behind another times out, and is never computed: only the first one runs."""
    before = _model_stats(client, "delayed")
    first = _pair(rows=3)
    first_done: list[tuple[object, object]] = []
    finished = threading.Event()

    def record(result: object, error: object) -> None:
        first_done.append((result, error))
        finished.set()

    client.async_infer("delayed", [infer_input(n, a) for n, a in first.items()], record)
    time.sleep(0.05)
    start = time.monotonic()
    with pytest.raises(InferenceServerException) as info:
        client.infer(
            "delayed", [infer_input(n, a) for n, a in _pair(rows=2).items()], client_timeout=0.3
        )
    elapsed = time.monotonic() - start
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert 0.25 < elapsed < 0.9
    assert finished.wait(10)
    ((result, error),) = first_done
    assert error is None, error
    np.testing.assert_array_equal(result.as_numpy("sum"), first["a"] + first["b"])
    after = _wait_for_failures(client, "delayed", before.inference_stats.fail.count + 1)
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1
    # Only the first request's 3 rows reached the model.
    assert after.execution_count - before.execution_count == 1
    assert after.inference_count - before.inference_count == 3
    # A full batch (8 rows) is dispatched at once.
    full = _pair(rows=8)
    result = client.infer("delayed", [infer_input(n, a) for n, a in full.items()], client_timeout=5)
    np.testing.assert_array_equal(result.as_numpy("diff"), full["a"] - full["b"])


def test_timeout_parameter_expires_in_the_queue(client: grpcclient.InferenceServerClient) -> None:
    """The `timeout` parameter (microseconds) bounds the time in the queue; the
    request is answered when it expires, not after the 1 s batching delay, with
    DEADLINE_EXCEEDED (Triton says UNAVAILABLE here; a deadline that passed is
    what DEADLINE_EXCEEDED means), and it is never computed."""
    before = _model_stats(client, "delayed")
    start = time.monotonic()
    with pytest.raises(InferenceServerException) as info:
        client.infer(
            "delayed", [infer_input(n, a) for n, a in _pair(rows=2).items()], timeout=200_000
        )
    elapsed = time.monotonic() - start
    assert 0.15 < elapsed < 0.8
    after = _model_stats(client, "delayed")
    assert after.execution_count == before.execution_count
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert_add_sub_serves(client)
    assert "delayed" in info.value.message()
    assert "queue" in info.value.message()
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_streamed_errors_carry_their_status_code(stub: Client) -> None:
    """A stream's errors carry only a message in the protocol; tidal adds the
    code the same error has on a unary call as the `grpc_status_code`
    parameter, so that a client can tell a retryable refusal from its own
    expired deadline or a bad request."""
    missing_b = build_request("add_sub", {"a": _pair()["a"]}, request_id="missing_b")
    expired = build_request("delayed", _pair(rows=2), request_id="expired", timeout_us=200_000)
    requests = [
        missing_b,
        build_request("no_such_model", _pair(), request_id="unknown"),
        expired,
        build_request("add_sub", _pair(), request_id="good"),
    ]
    answers = {a.infer_response.id: a for a in stub.stub.ModelStreamInfer(iter(requests))}
    assert set(answers) == {"missing_b", "unknown", "expired", "good"}
    expected = {
        "missing_b": (grpc.StatusCode.INVALID_ARGUMENT, "missing input `b`"),
        "unknown": (grpc.StatusCode.NOT_FOUND, "no_such_model"),
        "expired": (grpc.StatusCode.DEADLINE_EXCEEDED, "delayed"),
    }
    for request_id, (code, named) in expected.items():
        answer = answers[request_id]
        assert named in answer.error_message
        parameter = answer.infer_response.parameters[STREAM_ERROR_CODE]
        assert parameter.WhichOneof("parameter_choice") == "int64_param"
        assert parameter.int64_param == code.value[0], (request_id, parameter)
    good = answers["good"]
    assert good.error_message == ""
    assert STREAM_ERROR_CODE not in good.infer_response.parameters
    assert set(decode_response(good.infer_response)) == {"sum", "diff"}


# ---------------------------------------------------------------- execution failures


def test_execution_failure_fails_only_its_batch(
    client: grpcclient.InferenceServerClient, repo: Path
) -> None:
    """fail_on_negative raises inside ONNX Runtime for a negative input. The request
    that carries one gets INTERNAL with the runtime's message; of the valid requests
    in flight at the same time, only those that shared its batch fail."""
    negative = np.array([[1.0, -2.0, 3.0, 4.0]], dtype=np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the error is expected: keep ORT's log quiet
    session = ort.InferenceSession(str(repo / "fail_on_negative" / "model.onnx"), options)
    with pytest.raises(Exception) as runtime_error:  # noqa: PT011 - ORT raises its own classes
        session.run(None, {"x": negative})
    runtime_message = str(runtime_error.value)
    # The part of ORT's message that does not depend on the batch.
    detail = runtime_message.rsplit("Status Message:", 1)[-1].strip()
    assert detail

    rng = np.random.default_rng(7)
    valid = [rng.uniform(0, 10, size=(1, 4)).astype(np.float32) for _ in range(24)]
    calls = [(str(i), [infer_input("x", x)]) for i, x in enumerate(valid)]
    calls.insert(len(valid) // 2, ("negative", [infer_input("x", negative)]))
    results = _infer_together(client, "fail_on_negative", calls)

    _, error = results.pop("negative")
    assert error is not None
    assert error.status() == "StatusCode.INTERNAL"
    assert "fail_on_negative" in error.message()
    assert detail in error.message()
    match = re.search(r"batch of (\d+)", error.message())
    assert match, error.message()
    batch = int(match[1])
    failed = []
    for key, (result, err) in results.items():
        if err is None:
            np.testing.assert_array_equal(result.as_numpy("y"), valid[int(key)])
        else:
            failed.append(key)
            assert err.status() == "StatusCode.INTERNAL"
            assert err.message() == error.message()
    # The batch that failed held the negative request and `batch - 1` valid ones.
    assert len(failed) == batch - 1
    assert len(results) - len(failed) >= len(valid) - 7
    # And the model keeps serving.
    x = valid[0]
    np.testing.assert_array_equal(
        client.infer("fail_on_negative", [infer_input("x", x)]).as_numpy("y"), x
    )


def test_bytes_that_are_not_utf8_are_refused_alone(
    client: grpcclient.InferenceServerClient,
) -> None:
    """ONNX string tensors hold text: BYTES that are not UTF-8 are the sender's
    INVALID_ARGUMENT, naming the input and the element, and the requests
    queued beside it are answered."""
    bad = _identity_inputs()
    bad["in_BYTES"] = np.array([[b"ok", b"\xff\xfe", b"", b"x"]], dtype=np.object_)
    good = _identity_inputs()
    good["in_BYTES"] = np.array([[b"ok", "f\u00e9".encode(), b"", b"x"]], dtype=np.object_)
    results = _infer_together(
        client,
        "identity_all",
        [
            (key, [infer_input(n, a, _datatype(n)) for n, a in inputs.items()])
            for key, inputs in (("good-0", good), ("bad", bad), ("good-1", good))
        ],
    )
    _, error = results.pop("bad")
    assert error is not None
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "`in_BYTES` element 1 is not UTF-8" in error.message()
    for key, (result, err) in results.items():
        assert err is None, (key, err)
        assert result.as_numpy("out_BYTES").tolist() == good["in_BYTES"].tolist()


# ---------------------------------------------------------------- cancellation


def test_cancelled_request_is_never_computed(client: grpcclient.InferenceServerClient) -> None:
    """A request its client cancels while it waits in `delayed`'s queue is dropped."""
    before = _model_stats(client, "delayed")
    outcome: list[object] = []
    finished = threading.Event()

    def record(result: object, error: object) -> None:
        outcome.append(error)
        finished.set()

    inputs = [infer_input(n, a) for n, a in _pair(rows=2).items()]
    context = client.async_infer("delayed", inputs, record)
    time.sleep(0.1)
    context.cancel()
    assert finished.wait(5)
    (error,) = outcome
    assert error is not None
    assert "CANCELLED" in str(error.status())
    # The queue notices when it next looks (at the latest when the 1 s delay is up).
    after = _wait_for_failures(client, "delayed", before.inference_stats.fail.count + 1)
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.execution_count == before.execution_count
    assert after.inference_count == before.inference_count
    full = _pair(rows=8)
    result = client.infer("delayed", [infer_input(n, a) for n, a in full.items()])
    np.testing.assert_array_equal(result.as_numpy("sum"), full["a"] + full["b"])
