"""Many clients at once: every answer is its own request's, and batches really form."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import TidalServer, infer_input, reference

CLIENTS = 64
REQUESTS_PER_CLIENT = 50
STREAM_REQUESTS = 2000


def _inputs(count: int, seed: int) -> np.ndarray:
    """`count` distinct single-row inputs of the mlp, [count, 1, 512]."""
    return np.random.default_rng(seed).standard_normal((count, 1, 512), dtype=np.float32)


def _expected(repo: Path, inputs: np.ndarray) -> np.ndarray:
    """ONNX Runtime's own answers, one row per input, computed in batches."""
    rows = inputs.reshape(len(inputs), 512)
    chunks = [
        reference(repo, "mlp", {"x": rows[i : i + 256]})["y"] for i in range(0, len(rows), 256)
    ]
    return np.concatenate(chunks).reshape(len(inputs), 1, 128)


def _counts(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    (stats,) = client.get_inference_statistics(model).model_stats
    return stats.inference_count, stats.execution_count


@pytest.mark.parametrize("model", ["mlp_adaptive", "mlp_batched"])
def test_concurrent_clients_get_their_own_answers(
    server: TidalServer, repo: Path, client: grpcclient.InferenceServerClient, model: str
) -> None:
    inputs = _inputs(CLIENTS * REQUESTS_PER_CLIENT, seed=10)
    expected = _expected(repo, inputs)
    # Distinct inputs give distinct answers, so a mixed-up answer cannot pass.
    assert len({row.tobytes() for row in expected}) == len(expected)
    before = _counts(client, model)
    start = threading.Barrier(CLIENTS)
    failures: list[str] = []

    def run(worker: int) -> None:
        own = grpcclient.InferenceServerClient(server.grpc)
        try:
            start.wait(timeout=30)
            for k in range(REQUESTS_PER_CLIENT):
                i = worker * REQUESTS_PER_CLIENT + k
                result = own.infer(model, [infer_input("x", inputs[i])], request_id=str(i))
                if result.get_response().id != str(i):
                    failures.append(f"request {i} answered with id {result.get_response().id}")
                got = result.as_numpy("y")
                if not np.allclose(got, expected[i], rtol=1e-4, atol=1e-5):
                    failures.append(f"request {i}: wrong answer")
        except Exception as exc:  # reported below, with the worker that saw it
            failures.append(f"client {worker}: {exc!r}")
        finally:
            own.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert failures == []
    after = _counts(client, model)
    samples, batches = after[0] - before[0], after[1] - before[1]
    assert samples == CLIENTS * REQUESTS_PER_CLIENT
    # Batches formed: fewer executions than requests.
    assert samples / batches > 1, f"{samples} samples in {batches} batches"


def test_one_stream_with_many_requests_in_flight(
    repo: Path, client: grpcclient.InferenceServerClient
) -> None:
    inputs = _inputs(STREAM_REQUESTS, seed=11)
    expected = _expected(repo, inputs)
    before = _counts(client, "mlp_batched")
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(STREAM_REQUESTS):
            client.async_stream_infer(
                "mlp_batched", [infer_input("x", inputs[i])], request_id=str(i)
            )
        seen = set()
        for _ in range(STREAM_REQUESTS):
            result, error = answers.get(timeout=60)
            assert error is None, error
            i = int(result.get_response().id)
            assert i not in seen, f"request {i} answered twice"
            seen.add(i)
            np.testing.assert_allclose(result.as_numpy("y"), expected[i], rtol=1e-4, atol=1e-5)
    finally:
        client.stop_stream()
    assert seen == set(range(STREAM_REQUESTS))
    assert answers.empty()
    samples, batches = (a - b for a, b in zip(_counts(client, "mlp_batched"), before, strict=True))
    assert samples == STREAM_REQUESTS
    assert samples / batches > 1, f"{samples} samples in {batches} batches"


def test_concurrent_streams_and_unary_calls_on_several_models(
    server: TidalServer, repo: Path
) -> None:
    """Streams and unary calls to different models at once do not mix answers."""
    failures: list[str] = []
    rng = np.random.default_rng(12)
    images = rng.standard_normal((40, 1, 3, 32, 32), dtype=np.float32)
    tokens = rng.integers(0, 1000, size=(40, 1, 32), dtype=np.int64)
    expected_cnn = [reference(repo, "cnn", {"image": x})["logits"] for x in images]
    expected_tf = [reference(repo, "transformer", {"tokens": t})["embedding"] for t in tokens]

    def unary(model: str, name: str, out: str, data: np.ndarray, want: list[np.ndarray]) -> None:
        c = grpcclient.InferenceServerClient(server.grpc)
        try:
            for i, x in enumerate(data):
                got = c.infer(model, [infer_input(name, x)]).as_numpy(out)
                if not np.allclose(got, want[i], rtol=1e-4, atol=1e-5):
                    failures.append(f"{model} {i}")
        except Exception as exc:
            failures.append(f"{model}: {exc!r}")
        finally:
            c.close()

    def stream(model: str, name: str, out: str, data: np.ndarray, want: list[np.ndarray]) -> None:
        c = grpcclient.InferenceServerClient(server.grpc)
        answers: queue.Queue[tuple[object, object]] = queue.Queue()
        try:
            c.start_stream(callback=lambda result, error: answers.put((result, error)))
            for i, x in enumerate(data):
                c.async_stream_infer(model, [infer_input(name, x)], request_id=f"{model}-{i}")
            for _ in data:
                result, error = answers.get(timeout=60)
                if error is not None:
                    failures.append(f"{model}: {error}")
                    continue
                i = int(result.get_response().id.rsplit("-", 1)[1])
                if not np.allclose(result.as_numpy(out), want[i], rtol=1e-4, atol=1e-5):
                    failures.append(f"{model} stream {i}")
            c.stop_stream()
        except Exception as exc:
            failures.append(f"{model} stream: {exc!r}")
        finally:
            c.close()

    jobs = [
        (unary, ("cnn_relaxed", "image", "logits", images, expected_cnn)),
        (stream, ("cnn_relaxed", "image", "logits", images, expected_cnn)),
        (unary, ("transformer_relaxed", "tokens", "embedding", tokens, expected_tf)),
        (stream, ("transformer_relaxed", "tokens", "embedding", tokens, expected_tf)),
    ]
    threads = [threading.Thread(target=f, args=args) for f, args in jobs * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
