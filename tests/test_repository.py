"""The model repository: folders, signatures read from ONNX, the `tidal` CLI, metrics."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from helpers import TidalServer, infer_input, reference
from prometheus_client.parser import text_string_to_metric_families
from tidal import _core
from tidal.config import ModelConfig
from tidal.errors import ConfigError, ModelError, ModelNotFoundError
from tidal.repository import ModelRepository
from tidal.zoo import KSERVE_TO_ONNX, TEST_MODELS, ZOO, write_test_models, write_zoo
from tritonclient.utils import InferenceServerException


def _specs(tensors: list[_core.TensorSpec]) -> list[tuple[str, str, list[int]]]:
    return [(t.name, t.datatype, list(t.shape)) for t in tensors]


@pytest.fixture(scope="module")
def zoo_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    root = tmp_path_factory.mktemp("zoo")
    write_zoo(root)
    write_test_models(root)
    return ModelRepository(root)


def _folder(root: Path, name: str, source: Path | None = None, toml: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if source is not None:
        (folder / "model.onnx").write_bytes(source.read_bytes())
    if toml is not None:
        (folder / "tidal.toml").write_text(toml)
    return folder


# ---------------------------------------------------------------- reading folders


def test_names_are_the_model_folders(zoo_repo: ModelRepository, tmp_path: Path) -> None:
    assert zoo_repo.names() == sorted([*ZOO, *TEST_MODELS])
    root = tmp_path / "r"
    _folder(root, "b")
    _folder(root, "a")
    _folder(root, ".hidden")
    (root / "notes.txt").write_text("not a model")
    assert ModelRepository(root).names() == ["a", "b"]


def test_signatures_leave_out_the_batch_dimension(zoo_repo: ModelRepository) -> None:
    mlp = zoo_repo.signature("mlp")
    assert _specs(mlp.inputs) == [("x", "FP32", [512])]
    assert _specs(mlp.outputs) == [("y", "FP32", [128])]
    cnn = zoo_repo.signature("cnn")
    assert _specs(cnn.inputs) == [("image", "FP32", [3, 32, 32])]
    transformer = zoo_repo.signature("transformer")
    assert _specs(transformer.inputs) == [("tokens", "INT64", [32])]
    assert _specs(transformer.outputs) == [("embedding", "FP32", [64])]
    add_sub = zoo_repo.signature("add_sub")
    assert [t.name for t in add_sub.inputs] == ["a", "b"]
    assert [t.name for t in add_sub.outputs] == ["sum", "diff"]


def test_every_datatype_is_read(zoo_repo: ModelRepository) -> None:
    signature = zoo_repo.signature("identity_all")
    assert {t.datatype for t in signature.inputs} == set(KSERVE_TO_ONNX)
    for tensor in [*signature.inputs, *signature.outputs]:
        assert tensor.name.endswith(tensor.datatype)
        assert list(tensor.shape) == [4]


def test_configured_models(zoo_repo: ModelRepository) -> None:
    assert zoo_repo.config("transformer").max_batch_size == 32
    assert zoo_repo.config("no_batch").max_batch_size == 0
    assert _specs(zoo_repo.signature("no_batch").inputs) == [("x", "FP32", [3, 4])]
    spec = zoo_repo.spec("identity_all")
    assert spec.name == "identity_all"
    assert spec.max_batch_size == 8
    assert spec.platform == "onnxruntime_onnx"
    assert spec.policy == "static"
    assert spec.queue_capacity == 4096


def test_folder_with_only_a_model_serves_with_defaults(
    zoo_repo: ModelRepository, tmp_path: Path
) -> None:
    _folder(tmp_path, "plain", zoo_repo.root / "mlp" / "model.onnx")
    _folder(tmp_path, "fixed", zoo_repo.root / "no_batch" / "model.onnx")
    repo = ModelRepository(tmp_path)
    assert repo.config("plain") == ModelConfig()
    assert _specs(repo.signature("plain").inputs) == [("x", "FP32", [512])]
    # A fixed first dimension cannot be a batch: served without batching.
    fixed = repo.config("fixed")
    assert fixed.max_batch_size == 0
    assert fixed.queue == ModelConfig().queue
    assert _specs(repo.signature("fixed").inputs) == [("x", "FP32", [3, 4])]
    assert repo.spec("fixed").max_batch_size == 0


def test_explicit_batching_of_a_fixed_model_is_an_error(
    zoo_repo: ModelRepository, tmp_path: Path
) -> None:
    folder = _folder(
        tmp_path, "fixed", zoo_repo.root / "no_batch" / "model.onnx", "max_batch_size = 4\n"
    )
    with pytest.raises(ModelError) as info:
        ModelRepository(tmp_path).config("fixed")
    message = str(info.value)
    assert "`fixed`" in message
    assert "`x`" in message
    assert "max_batch_size = 0" in message
    assert str(folder / "tidal.toml") in message


def test_folders_that_cannot_be_served(tmp_path: Path) -> None:
    _folder(tmp_path, "empty")
    broken = _folder(tmp_path, "broken")
    (broken / "model.onnx").write_bytes(b"this is not a protobuf")
    _folder(tmp_path, "bad_toml", toml="max_batch_size = -3\n")
    repo = ModelRepository(tmp_path)
    with pytest.raises(ModelError, match=r"model `empty`: no `model.onnx`"):
        repo.signature("empty")
    with pytest.raises(ModelError, match=r"model `broken`: .* not a readable ONNX model"):
        repo.signature("broken")
    with pytest.raises(ConfigError, match=r"bad_toml.tidal\.toml: `max_batch_size`"):
        repo.config("bad_toml")


def test_unknown_names_never_leave_the_repository(tmp_path: Path) -> None:
    _folder(tmp_path / "repo", "mlp")
    _folder(tmp_path, "outside")
    repo = ModelRepository(tmp_path / "repo")
    for name in ("nope", "../outside", "/etc", ".", ""):
        with pytest.raises(ModelNotFoundError) as info:
            repo.path(name)
        assert isinstance(info.value, KeyError)
        assert f"`{name}`" in str(info.value)
    with pytest.raises(NotADirectoryError):
        ModelRepository(tmp_path / "missing")


# ---------------------------------------------------------------- served over gRPC


def test_served_bare_models(client: grpcclient.InferenceServerClient, server: TidalServer) -> None:
    """`bare` and `bare_fixed` hold only a `model.onnx` (see `helpers.EXTRA_MODELS`)."""
    assert not (server.repo / "bare" / "tidal.toml").exists()
    config = client.get_model_config("bare").config
    assert config.max_batch_size == 64
    assert config.dynamic_batching.priority_levels == 2
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 4096
    x = np.random.default_rng(20).standard_normal((3, 512), dtype=np.float32)
    got = client.infer("bare", [infer_input("x", x)]).as_numpy("y")
    np.testing.assert_allclose(
        got, reference(server.repo, "mlp", {"x": x})["y"], rtol=1e-4, atol=1e-5
    )

    assert client.get_model_config("bare_fixed").config.max_batch_size == 0
    assert [list(t.shape) for t in client.get_model_metadata("bare_fixed").inputs] == [[3, 4]]
    x = np.random.default_rng(21).standard_normal((3, 4), dtype=np.float32)
    np.testing.assert_array_equal(
        client.infer("bare_fixed", [infer_input("x", x)]).as_numpy("y"), 2 * x
    )


def test_a_broken_model_does_not_stop_the_others(
    server_factory: Callable[..., TidalServer], server: TidalServer, tmp_path: Path
) -> None:
    root = tmp_path / "repository"
    source = server.repo / "add_sub" / "model.onnx"
    _folder(root, "add_sub", source)
    (_folder(root, "broken") / "model.onnx").write_bytes(b"not onnx")
    _folder(root, "misconfigured", source, "[queue]\ncapasity = 3\n")
    s = server_factory(root, "--no-metrics")
    assert s.model_count == 1
    client = grpcclient.InferenceServerClient(s.grpc)
    try:
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["add_sub"].state == "READY"
        assert index["broken"].state == "UNAVAILABLE"
        assert "not a readable ONNX model" in index["broken"].reason
        assert index["misconfigured"].state == "UNAVAILABLE"
        assert "`queue.capasity`" in index["misconfigured"].reason
        assert client.is_model_ready("broken") is False
        with pytest.raises(InferenceServerException) as info:
            client.load_model("misconfigured")
        assert "`queue.capasity`" in info.value.message()
        # Fixing the file and loading again serves it.
        (root / "misconfigured" / "tidal.toml").write_text("[queue]\ncapacity = 3\n")
        client.load_model("misconfigured")
        assert client.is_model_ready("misconfigured") is True
        config = client.get_model_config("misconfigured").config
        assert config.dynamic_batching.default_queue_policy.max_queue_size == 3
        a = np.ones((1, 16), np.float32)
        result = client.infer("misconfigured", [infer_input("a", a), infer_input("b", a)])
        np.testing.assert_array_equal(result.as_numpy("sum"), 2 * a)
        # A reload that fails leaves the served version serving.
        (root / "misconfigured" / "tidal.toml").write_text("max_batch_size = -1\n")
        with pytest.raises(InferenceServerException) as info:
            client.load_model("misconfigured")
        assert "`max_batch_size`" in info.value.message()
        assert client.is_model_ready("misconfigured") is True
        result = client.infer("misconfigured", [infer_input("a", a), infer_input("b", a)])
        np.testing.assert_array_equal(result.as_numpy("diff"), 0 * a)
        entry = {m.name: m for m in client.get_model_repository_index().models}["misconfigured"]
        assert entry.state == "READY"
        assert "reload failed" in entry.reason
    finally:
        client.close()
    assert "model broken: not loaded" in s.stderr()


def test_the_cores_warnings_reach_the_servers_log(
    server_factory: Callable[..., TidalServer], server: TidalServer, tmp_path: Path
) -> None:
    root = tmp_path / "repository"
    _folder(root, "one_row", server.repo / "one_row" / "model.onnx")
    s = server_factory(root, "--no-metrics")
    # The warm-up profile (in the model's worker thread, in Rust) stops at the
    # first batch size that fails, and says so through Python's logging.
    client = grpcclient.InferenceServerClient(s.grpc)
    try:
        assert client.is_model_ready("one_row")
        x = np.ones((1, 4), np.float32)
        result = client.infer("one_row", [infer_input("x", x)])
        np.testing.assert_array_equal(result.as_numpy("y"), x)
    finally:
        client.close()
    assert "WARNING _core.worker: model `one_row`: warm-up profile stopped at batch 2" in s.stderr()


# ---------------------------------------------------------------- the command line


def _tidal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidal", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_zoo_writes_the_example_models(tmp_path: Path) -> None:
    target = tmp_path / "models"
    done = _tidal("zoo", str(target))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(target / name) for name in ZOO]
    assert sorted(p.name for p in target.iterdir()) == sorted(ZOO)
    repo = ModelRepository(target)
    for name in ZOO:
        session = ort.InferenceSession(str(target / name / "model.onnx"))
        signature = repo.signature(name)
        assert [i.name for i in session.get_inputs()] == [t.name for t in signature.inputs]
        assert ModelConfig.from_toml(target / name / "tidal.toml").max_batch_size > 0
    # Deterministic: writing again gives the same bytes.
    first = (target / "mlp" / "model.onnx").read_bytes()
    assert _tidal("zoo", str(target), "--test-models").returncode == 0
    assert (target / "mlp" / "model.onnx").read_bytes() == first
    assert sorted(p.name for p in target.iterdir()) == sorted([*ZOO, *TEST_MODELS])


def test_cli_serve_refuses_a_missing_repository(tmp_path: Path) -> None:
    done = _tidal("serve", str(tmp_path / "missing"), "--grpc-port", "0", "--no-metrics")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("tidal: error: ")
    assert "missing" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_usage_errors() -> None:
    done = _tidal("serve", "--grpc-port", "not-a-number")
    assert done.returncode == 2
    assert "--grpc-port" in done.stderr
    version = _tidal("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("tidal ")


# ---------------------------------------------------------------- metrics


def _scrape(server: TidalServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_per_model(
    client: grpcclient.InferenceServerClient, server: TidalServer
) -> None:
    before = _scrape(server)
    requests, rows = 5, 2
    image = np.zeros((rows, 3, 32, 32), np.float32)
    for _ in range(requests):
        client.infer("cnn", [infer_input("image", image)])
    after = _scrape(server)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("tidal_requests_total", model="cnn") == requests
    assert delta("tidal_request_failures_total", model="cnn") == 0
    assert delta("tidal_inferences_total", model="cnn") == requests * rows
    assert delta("tidal_executions_total", model="cnn") == requests
    assert delta("tidal_batches_total", model="cnn", batch_size=str(rows)) == requests
    assert delta("tidal_request_duration_seconds_total", model="cnn") > 0
    assert delta("tidal_compute_duration_seconds_total", model="cnn") > 0
    assert delta("tidal_queue_duration_seconds_total", model="cnn") > 0
    assert _value(after, "tidal_queue_depth", model="cnn") == 0
    # Other models saw none of it.
    assert delta("tidal_requests_total", model="mlp") == 0
    # Every served model has its series.
    served = {labels[0][1] for name, labels in after if name == "tidal_requests_total"}
    assert served == {p.name for p in server.repo.iterdir() if p.is_dir()}


def test_metrics_count_failures(
    client: grpcclient.InferenceServerClient, server: TidalServer
) -> None:
    before = _scrape(server)
    with pytest.raises(InferenceServerException):
        client.infer("fail_on_negative", [infer_input("x", -np.ones((1, 4), np.float32))])
    # Malformed (a row of 5 where the model takes 4): refused before admission.
    with pytest.raises(InferenceServerException, match="`x`"):
        client.infer("fail_on_negative", [infer_input("x", np.ones((1, 5), np.float32))])
    # A burst at the one-request queue: some are refused (UNAVAILABLE).
    a = np.ones((1, 16), np.float32)
    errors: list[object] = []
    done = threading.Semaphore(0)

    def record(result: object, error: object) -> None:
        errors.append(error)
        done.release()

    burst = 8
    for _ in range(burst):
        client.async_infer("tiny_queue", [infer_input("a", a), infer_input("b", a)], record)
    for _ in range(burst):
        assert done.acquire(timeout=10)
    refused = sum(e is not None for e in errors)
    assert refused > 0
    after = _scrape(server)

    def delta(name: str, model: str) -> float:
        return _value(after, name, model=model) - _value(before, name, model=model)

    assert delta("tidal_requests_total", "fail_on_negative") == 2
    assert delta("tidal_request_failures_total", "fail_on_negative") == 2
    assert delta("tidal_request_invalid_total", "fail_on_negative") == 1
    assert delta("tidal_request_refusals_total", "fail_on_negative") == 0
    # Requests refused at admission were answered, with an error: they count.
    assert delta("tidal_requests_total", "tiny_queue") == burst
    assert delta("tidal_request_failures_total", "tiny_queue") == refused
    assert delta("tidal_request_refusals_total", "tiny_queue") == refused
