"""The official Triton client (`tritonclient.grpc`) works against tidal unchanged."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tidal
import tritonclient.grpc as grpcclient
from helpers import TidalServer, assert_add_sub_serves, infer_input, reference
from tidal._proto import grpc_service_pb2 as pb
from tidal.client import Client, build_request, decode_response
from tidal.zoo import KSERVE_TO_ONNX
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

ZOO_SHAPES = {
    # model: (input, datatype, shape without batch), (output, shape without batch), max batch
    "mlp": (("x", "FP32", [512]), ("y", [128]), 64),
    "cnn": (("image", "FP32", [3, 32, 32]), ("logits", [10]), 64),
    "transformer": (("tokens", "INT64", [32]), ("embedding", [64]), 32),
    "transformer_large": (("tokens", "INT64", [128]), ("embedding", [128]), 32),
}


def zoo_input(model: str, rows: int, rng: np.random.Generator) -> np.ndarray:
    (_, datatype, shape), _, _ = ZOO_SHAPES[model]
    if datatype == "INT64":
        return rng.integers(0, 1000, size=(rows, *shape), dtype=np.int64)
    return rng.standard_normal((rows, *shape), dtype=np.float32)


# ---------------------------------------------------------------- server and model state


def test_server_is_live_and_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


def test_model_ready_for_served_models_only(
    client: grpcclient.InferenceServerClient, server: TidalServer
) -> None:
    served = sorted(p.name for p in server.repo.iterdir() if p.is_dir())
    assert server.model_count == len(served)
    for name in served:
        assert client.is_model_ready(name) is True, name
        assert client.is_model_ready(name, model_version="1") is True, name
    assert client.is_model_ready("no_such_model") is False
    assert client.is_model_ready("mlp", model_version="99") is False


def test_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata.name == "tidal"
    assert metadata.version == tidal.__version__
    for extension in ("model_configuration", "model_repository", "statistics"):
        assert extension in metadata.extensions


@pytest.mark.parametrize("model", sorted(ZOO_SHAPES))
def test_model_metadata(client: grpcclient.InferenceServerClient, model: str) -> None:
    (name, datatype, shape), (out_name, out_shape), _ = ZOO_SHAPES[model]
    metadata = client.get_model_metadata(model)
    assert metadata.name == model
    assert list(metadata.versions) == ["1"]
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        (name, datatype, [-1, *shape])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        (out_name, "FP32", [-1, *out_shape])
    ]


def test_model_metadata_without_batching(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("no_batch")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("x", "FP32", [3, 4])]
    assert [(t.name, list(t.shape)) for t in metadata.outputs] == [("y", [3, 4])]


@pytest.mark.parametrize("model", sorted(ZOO_SHAPES))
def test_model_config(client: grpcclient.InferenceServerClient, model: str) -> None:
    (name, datatype, shape), (out_name, out_shape), max_batch = ZOO_SHAPES[model]
    config = client.get_model_config(model).config
    assert config.name == model
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == max_batch
    assert [(i.name, list(i.dims)) for i in config.input] == [(name, shape)]
    assert grpcclient.model_config_pb2.DataType.Name(config.input[0].data_type) == (
        f"TYPE_{datatype}"
    )
    assert [(o.name, list(o.dims)) for o in config.output] == [(out_name, out_shape)]
    assert config.output[0].data_type == grpcclient.model_config_pb2.TYPE_FP32
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.priority_levels == 2
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 4096
    assert sum(group.count for group in config.instance_group) == 1
    # Load generators (perf_analyzer) read the decoupled flag: one response per request.
    assert config.model_transaction_policy.decoupled is False


def test_model_config_reflects_tidal_toml(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("tiny_queue").config
    assert config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 400_000
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 1
    no_batch = client.get_model_config("no_batch").config
    assert no_batch.max_batch_size == 0
    assert [list(i.dims) for i in no_batch.input] == [[3, 4]]


def test_unknown_model_has_no_metadata_or_config(client: grpcclient.InferenceServerClient) -> None:
    for call in (client.get_model_metadata, client.get_model_config):
        with pytest.raises(InferenceServerException) as info:
            call("no_such_model")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert "no_such_model" in info.value.message()


def test_inference_statistics_count_a_request(
    client: grpcclient.InferenceServerClient, server: TidalServer
) -> None:
    def stats() -> object:
        (s,) = client.get_inference_statistics("cnn").model_stats
        return s

    before = stats()
    rows = 3
    image = zoo_input("cnn", rows, np.random.default_rng(1))
    client.infer("cnn", [infer_input("image", image)])
    after = stats()
    assert after.name == "cnn"
    assert after.version == "1"
    assert after.inference_count - before.inference_count == rows
    assert after.execution_count - before.execution_count == 1
    b, a = before.inference_stats, after.inference_stats
    assert a.success.count - b.success.count == 1
    assert a.success.ns > b.success.ns
    assert a.fail.count == b.fail.count
    assert a.queue.count - b.queue.count == 1
    assert a.queue.ns > b.queue.ns
    assert a.compute_infer.count - b.compute_infer.count == 1
    assert a.compute_infer.ns > b.compute_infer.ns
    assert after.last_inference >= before.last_inference
    assert after.last_inference > 0
    sizes = {s.batch_size: s.compute_infer.count for s in after.batch_stats}
    old = {s.batch_size: s.compute_infer.count for s in before.batch_stats}
    assert sizes.get(rows, 0) - old.get(rows, 0) == 1


def test_statistics_of_all_models(client: grpcclient.InferenceServerClient) -> None:
    names = {s.name for s in client.get_inference_statistics().model_stats}
    assert {"mlp", "cnn", "transformer", "add_sub", "identity_all"} <= names
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("no_such_model")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_repository_index(client: grpcclient.InferenceServerClient, server: TidalServer) -> None:
    index = client.get_model_repository_index()
    folders = sorted(p.name for p in server.repo.iterdir() if p.is_dir())
    assert [m.name for m in index.models] == folders
    for model in index.models:
        assert (model.version, model.state) == ("1", "READY"), model


# ---------------------------------------------------------------- inference


@pytest.mark.parametrize("model", sorted(ZOO_SHAPES))
@pytest.mark.parametrize("rows", [1, 5])
def test_zoo_results_match_onnxruntime(
    client: grpcclient.InferenceServerClient, repo: Path, model: str, rows: int
) -> None:
    (name, _, _), (out_name, out_shape), _ = ZOO_SHAPES[model]
    data = zoo_input(model, rows, np.random.default_rng(rows))
    result = client.infer(model, [infer_input(name, data)])
    got = result.as_numpy(out_name)
    assert got.shape == (rows, *out_shape)
    assert got.dtype == np.float32
    expected = reference(repo, model, {name: data})[out_name]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert result.get_response().model_name == model
    assert result.get_response().model_version == "1"


def test_requested_output_subset(client: grpcclient.InferenceServerClient) -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 16), dtype=np.float32)
    b = rng.standard_normal((3, 16), dtype=np.float32)
    inputs = [infer_input("a", a), infer_input("b", b)]
    only_diff = client.infer("add_sub", inputs, outputs=[grpcclient.InferRequestedOutput("diff")])
    assert [o.name for o in only_diff.get_response().outputs] == ["diff"]
    np.testing.assert_array_equal(only_diff.as_numpy("diff"), a - b)
    assert only_diff.as_numpy("sum") is None
    both = client.infer("add_sub", inputs)
    assert sorted(o.name for o in both.get_response().outputs) == ["diff", "sum"]
    np.testing.assert_array_equal(both.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(both.as_numpy("diff"), a - b)


def test_request_id_is_echoed(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones((1, 16), np.float32)
    for request_id in ("abc-123", "ünïcödé id", ""):
        result = client.infer(
            "add_sub", [infer_input("a", a), infer_input("b", a)], request_id=request_id
        )
        assert result.get_response().id == request_id


def _datatype_values(rows: int) -> dict[str, np.ndarray]:
    """Per KServe datatype, `rows` x 4 values including each type's extremes."""
    values: dict[str, np.ndarray] = {
        "BOOL": np.array([True, False, False, True] * rows, dtype=np.bool_),
        "FP16": np.array([1.5, -65504, np.inf, 6.1e-5] * rows, dtype=np.float16),
        "FP32": np.array([np.pi, -1e38, np.nan, 1e-45] * rows, dtype=np.float32),
        "FP64": np.array([np.e, -1e308, -np.inf, 5e-324] * rows, dtype=np.float64),
        # Valid UTF-8 (ONNX strings hold text), including an empty element.
        "BYTES": np.array([b"tidal", b"", "ünï ✓".encode(), b"x" * 300] * rows, dtype=np.object_),
    }
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(dtype)
        values[np_to_triton_dtype(np.dtype(dtype))] = np.array(
            [info.min, info.max, 0, 1] * rows, dtype=dtype
        )
    return {datatype: array.reshape(rows, 4) for datatype, array in values.items()}


def test_every_datatype_round_trips(client: grpcclient.InferenceServerClient) -> None:
    values = _datatype_values(rows=2)
    assert set(values) == set(KSERVE_TO_ONNX)
    inputs = [infer_input(f"in_{dt}", array, dt) for dt, array in values.items()]
    result = client.infer("identity_all", inputs)
    outputs = {o.name: o for o in result.get_response().outputs}
    for datatype, sent in values.items():
        assert outputs[f"out_{datatype}"].datatype == datatype
        assert list(outputs[f"out_{datatype}"].shape) == [2, 4]
        got = result.as_numpy(f"out_{datatype}")
        assert got.shape == sent.shape, datatype
        if datatype == "BYTES":
            assert got.tolist() == sent.tolist()
        else:
            assert got.dtype == sent.dtype, datatype
            np.testing.assert_array_equal(got, sent, err_msg=datatype)


def test_typed_contents_are_accepted(server: TidalServer) -> None:
    """A request with typed `contents` and no raw_input_contents (tidal's own stubs)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 16), dtype=np.float32)
    b = rng.standard_normal((2, 16), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="add_sub", id="typed")
    for name, array in (("a", a), ("b", b)):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=array.shape)
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    tokens = rng.integers(0, 1000, size=(2, 32), dtype=np.int64)
    typed_tokens = pb.ModelInferRequest(model_name="transformer")
    tensor = typed_tokens.inputs.add(name="tokens", datatype="INT64", shape=tokens.shape)
    tensor.contents.int64_contents.extend(tokens.ravel().tolist())
    with Client(server.grpc) as client:
        response = client.stub.ModelInfer(request)
        assert response.id == "typed"
        outputs = decode_response(response)
        np.testing.assert_array_equal(outputs["sum"], a + b)
        np.testing.assert_array_equal(outputs["diff"], a - b)
        raw = decode_response(
            client.stub.ModelInfer(build_request("transformer", {"tokens": tokens}))
        )
        typed = decode_response(client.stub.ModelInfer(typed_tokens))
        np.testing.assert_array_equal(typed["embedding"], raw["embedding"])


def test_priority_and_timeout_parameters_are_accepted(
    client: grpcclient.InferenceServerClient,
) -> None:
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    inputs = [infer_input("a", a), infer_input("b", a)]
    for kwargs in (
        {"priority": 1},
        {"priority": 2},
        {"timeout": 5_000_000},
        {"priority": 2, "timeout": 5_000_000},
    ):
        result = client.infer("add_sub", inputs, **kwargs)
        np.testing.assert_array_equal(result.as_numpy("sum"), 2 * a)


def test_int64_priority_is_accepted(server: TidalServer) -> None:
    """Triton accepts the priority as int64_param too (older clients send that)."""
    a = np.ones((1, 16), np.float32)
    request = build_request("add_sub", {"a": a, "b": a})
    request.parameters["priority"].int64_param = 2
    with Client(server.grpc) as client:
        np.testing.assert_array_equal(
            decode_response(client.stub.ModelInfer(request))["sum"], 2 * a
        )


def test_other_client_parameters_are_ignored(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones((1, 16), np.float32)
    result = client.infer(
        "add_sub",
        [infer_input("a", a), infer_input("b", a)],
        headers={"x-tidal-test": "yes"},
        parameters={"custom_text": "x", "custom_int": 3, "custom_flag": True, "custom_real": 0.5},
        client_timeout=30.0,
    )
    np.testing.assert_array_equal(result.as_numpy("sum"), 2 * a)


def test_priority_orders_the_queue(client: grpcclient.InferenceServerClient) -> None:
    """In `delayed` (batches of 8, 1 s delay), 6 + 4 rows do not fit one batch: the
    request of the higher priority goes first, the other waits out the delay."""

    def race(first_priority: int, second_priority: int) -> list[str]:
        done: list[str] = []
        errors: list[object] = []
        finished = threading.Semaphore(0)

        def callback(name: str):
            def record(result: object, error: object) -> None:
                if error is not None:
                    errors.append(error)
                done.append(name)
                finished.release()

            return record

        six, four = np.ones((6, 16), np.float32), np.ones((4, 16), np.float32)
        client.async_infer(
            "delayed",
            [infer_input("a", six), infer_input("b", six)],
            callback("first"),
            priority=first_priority,
        )
        time.sleep(0.2)
        client.async_infer(
            "delayed",
            [infer_input("a", four), infer_input("b", four)],
            callback("second"),
            priority=second_priority,
        )
        for _ in range(2):
            assert finished.acquire(timeout=10)
        assert errors == []
        return done

    assert race(0, 0) == ["first", "second"]
    assert race(2, 1) == ["second", "first"]


def test_no_batch_model(client: grpcclient.InferenceServerClient, repo: Path) -> None:
    x = np.random.default_rng(4).standard_normal((3, 4), dtype=np.float32)
    result = client.infer("no_batch", [infer_input("x", x)])
    np.testing.assert_array_equal(result.as_numpy("y"), reference(repo, "no_batch", {"x": x})["y"])
    np.testing.assert_array_equal(result.as_numpy("y"), 2 * x)
    with pytest.raises(InferenceServerException) as info:
        client.infer("no_batch", [infer_input("x", x[np.newaxis])])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "`x`" in info.value.message()
    assert "[1, 3, 4]" in info.value.message()


# ---------------------------------------------------------------- streaming


def test_stream_answers_each_request_once(client: grpcclient.InferenceServerClient) -> None:
    count = 1000
    rng = np.random.default_rng(5)
    a = rng.standard_normal((count, 1, 16), dtype=np.float32)
    b = rng.standard_normal((count, 1, 16), dtype=np.float32)
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(count):
            client.async_stream_infer(
                "add_sub", [infer_input("a", a[i]), infer_input("b", b[i])], request_id=f"req-{i}"
            )
        seen: dict[str, int] = {}
        for _ in range(count):
            result, error = answers.get(timeout=30)
            assert error is None, error
            request_id = result.get_response().id
            i = int(request_id.removeprefix("req-"))
            seen[request_id] = seen.get(request_id, 0) + 1
            np.testing.assert_array_equal(result.as_numpy("sum"), a[i] + b[i])
            np.testing.assert_array_equal(result.as_numpy("diff"), a[i] - b[i])
    finally:
        client.stop_stream()
    assert len(seen) == count
    assert set(seen.values()) == {1}
    assert answers.empty(), "a request was answered more than once"


def test_stream_errors_keep_the_stream_open(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones((1, 16), np.float32)
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("add_sub", [infer_input("a", a)], request_id="bad")
        client.async_stream_infer("no_such_model", [infer_input("a", a)], request_id="bad2")
        client.async_stream_infer(
            "add_sub", [infer_input("a", a), infer_input("b", a)], request_id="good"
        )
        got = [answers.get(timeout=10) for _ in range(3)]
    finally:
        client.stop_stream()
    errors = sorted(str(error.message()) for _, error in got if error is not None)
    assert len(errors) == 2
    assert "missing input `b`" in errors[0]
    assert "no_such_model" in errors[1]
    (good,) = [result for result, error in got if error is None]
    assert good.get_response().id == "good"
    np.testing.assert_array_equal(good.as_numpy("sum"), 2 * a)


# ---------------------------------------------------------------- repository


def test_unload_and_load(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_model_ready("reloadable")
    assert_add_sub_serves(client, "reloadable")
    client.unload_model("reloadable")
    try:
        assert client.is_model_ready("reloadable") is False
        with pytest.raises(InferenceServerException) as info:
            assert_add_sub_serves(client, "reloadable")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert "reloadable" in info.value.message()
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["reloadable"].state == "UNAVAILABLE"
        assert index["mlp"].state == "READY"
        # The other models keep serving.
        assert_add_sub_serves(client)
    finally:
        client.load_model("reloadable")
    assert client.is_model_ready("reloadable") is True
    assert_add_sub_serves(client, "reloadable")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["reloadable"].state == "READY"


def test_load_of_a_served_model_reloads_it(client: grpcclient.InferenceServerClient) -> None:
    client.load_model("reloadable")
    assert client.is_model_ready("reloadable") is True
    assert_add_sub_serves(client, "reloadable")


def test_load_and_unload_of_unknown_models_fail(client: grpcclient.InferenceServerClient) -> None:
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as info:
            call("no_such_model")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert "no_such_model" in info.value.message()
    assert_add_sub_serves(client)


def test_messages_over_grpc_default_limit(client: grpcclient.InferenceServerClient) -> None:
    """gRPC's default limit is 4 MiB; tidal's, like tritonclient's, is the protobuf maximum."""
    values = _datatype_values(rows=8)
    element = 256 * 1024
    values["BYTES"] = np.array(
        [bytes([65 + (i % 26)]) * element for i in range(32)], dtype=np.object_
    ).reshape(8, 4)
    assert sum(len(b) for b in values["BYTES"].ravel()) == 8 * 1024 * 1024
    inputs = [infer_input(f"in_{dt}", array, dt) for dt, array in values.items()]
    result = client.infer("identity_all", inputs)
    assert result.as_numpy("out_BYTES").tolist() == values["BYTES"].tolist()
    np.testing.assert_array_equal(result.as_numpy("out_FP64"), values["FP64"])
