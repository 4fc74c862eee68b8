"""Helpers of the test suite: real `tidal serve` processes, the test repository, references.

Every test talks to a real server over gRPC on 127.0.0.1, runs real ONNX
Runtime sessions, and uses the real `tritonclient` package. The repository
holds the example zoo, the test models of `tidal.zoo.write_test_models`, and a
few copies of them configured for what some tests need:

- `tiny_queue`: `add_sub` with a queue of one request and a 400 ms batching
  delay, so that a burst of concurrent requests overflows it.
- `delayed`: `add_sub` with a 1 s batching delay: a request shorter than a
  full batch waits in the queue, so deadlines and priorities can act on it.
  A request of a full batch (8 rows) is dispatched at once.
- `mlp_batched`: `mlp` with a 2 ms batching delay, so concurrent requests
  form batches.
- `reloadable`: `add_sub`, for the tests that unload and load a model.
- `mlp_adaptive`, `cnn_relaxed`, `transformer_relaxed`: the zoo models under
  the adaptive policy with a 30 s objective, for concurrency tests that must
  not depend on how loaded the test machine is.
- `slow_adaptive`: `transformer_large` one sequence per batch under a 60 s
  objective, a queue that takes a while to drain; `tight`:
  `transformer_large` under a 30 ms objective, easy to overload.
- `bare` and `bare_fixed`: a `model.onnx` and nothing else (the `mlp`, with a
  variable first dimension, and `no_batch`, with fixed dimensions).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tidal.zoo import write_test_models, write_zoo
from tritonclient.utils import np_to_triton_dtype

STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 30.0

_READY_LINE = re.compile(
    r"^tidal: serving (?P<count>\d+) models on (?P<host>[\d.]+):(?P<port>\d+)"
    r" \((?:metrics on [\d.]+:(?P<mport>\d+)|metrics off)\)$"
)

# name -> (source model folder, tidal.toml)
EXTRA_MODELS: dict[str, tuple[str, str | None]] = {
    "tiny_queue": (
        "add_sub",
        'max_batch_size = 8\n\n[batching]\npolicy = "static"\nmax_queue_delay_us = 400000\n\n'
        "[queue]\ncapacity = 1\n",
    ),
    "delayed": (
        "add_sub",
        'max_batch_size = 8\n\n[batching]\npolicy = "static"\nmax_queue_delay_us = 1000000\n',
    ),
    "mlp_batched": (
        "mlp",
        'max_batch_size = 64\n\n[batching]\npolicy = "static"\nmax_queue_delay_us = 2000\n',
    ),
    "reloadable": ("add_sub", 'max_batch_size = 8\n\n[batching]\npolicy = "static"\n'),
    # The adaptive policy with objectives a loaded test machine always meets,
    # for tests about correctness under concurrency rather than latency.
    "mlp_adaptive": ("mlp", "max_batch_size = 64\n\n[batching]\nslo_ms = 30000\n"),
    "cnn_relaxed": ("cnn", "max_batch_size = 64\n\n[batching]\nslo_ms = 30000\n"),
    "transformer_relaxed": ("transformer", "max_batch_size = 32\n\n[batching]\nslo_ms = 30000\n"),
    # transformer_large (about 1.6 ms a sequence) one sequence per batch: a
    # queue that takes time to drain, for deadlines and priorities.
    "slow_adaptive": (
        "transformer_large",
        "max_batch_size = 1\n\n[batching]\nslo_ms = 60000\n",
    ),
    # transformer_large under a 30 ms objective: easy to overload.
    "tight": ("transformer_large", "max_batch_size = 8\n\n[batching]\nslo_ms = 30\n"),
    "bare": ("mlp", None),
    "bare_fixed": ("no_batch", None),
}


@dataclass
class TidalServer:
    """A running `tidal serve` process."""

    process: subprocess.Popen[str]
    repo: Path
    host: str
    port: int
    metrics_port: int | None
    model_count: int
    stderr_path: Path
    terminated: bool = False

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        assert self.metrics_port is not None, "this server serves no metrics"
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self) -> None:
        """Send SIGTERM, once: a second one would make the server exit at once."""
        if not self.terminated and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.terminated = True

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit status (kills it if it hangs)."""
        self.terminate()
        try:
            return self.process.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def _read_ready_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The first stdout line, read on a thread so that a hung server cannot hang the tests."""
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return lines[0].strip() if lines else ""


def start_server(repo: Path, log_dir: Path, *args: str) -> TidalServer:
    """Start `python -m tidal serve REPO --grpc-port 0 ...` and wait for its ready line.

    Args:
        repo: the model repository.
        log_dir: where the server's stderr is written.
        args: more command-line flags (`--max-message-bytes`, `--no-metrics`, ...).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = log_dir / f"tidal-{time.monotonic_ns()}.stderr"
    command = [sys.executable, "-m", "tidal", "serve", str(repo), "--grpc-port", "0"]
    if "--no-metrics" not in args:
        command += ["--metrics-port", "0"]
    command += args
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    line = _read_ready_line(process, STARTUP_TIMEOUT_S)
    match = _READY_LINE.match(line)
    if match is None:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
        pytest.fail(
            f"`{' '.join(command)}` did not print its ready line; stdout: {line!r}\n"
            f"stderr:\n{stderr_path.read_text(errors='replace')}"
        )
    mport = match["mport"]
    return TidalServer(
        process=process,
        repo=repo,
        host=match["host"],
        port=int(match["port"]),
        metrics_port=int(mport) if mport else None,
        model_count=int(match["count"]),
        stderr_path=stderr_path,
    )


def stop_server(server: TidalServer) -> None:
    """Stop `server` and assert that it shut down cleanly, showing its stderr if not."""
    status = server.stop()
    assert status == 0, f"tidal serve exited with {status}; stderr:\n{server.stderr()}"


@contextlib.contextmanager
def running_server(repo: Path, log_dir: Path, *args: str) -> Iterator[TidalServer]:
    """A server for the duration of a `with` block; asserts a clean exit afterwards."""
    server = start_server(repo, log_dir, *args)
    try:
        yield server
    finally:
        stop_server(server)


def write_repository(root: Path) -> list[str]:
    """The zoo, the test models and `EXTRA_MODELS` in one repository; returns the names."""
    names = write_zoo(root) + write_test_models(root)
    for name, (source, toml) in EXTRA_MODELS.items():
        folder = root / name
        folder.mkdir()
        shutil.copyfile(root / source / "model.onnx", folder / "model.onnx")
        if toml is not None:
            (folder / "tidal.toml").write_text(toml)
        names.append(name)
    return sorted(names)


def infer_input(name: str, array: np.ndarray, datatype: str | None = None) -> grpcclient.InferInput:
    """A tritonclient input carrying `array`."""
    tensor = grpcclient.InferInput(
        name, list(array.shape), datatype or np_to_triton_dtype(array.dtype)
    )
    tensor.set_data_from_numpy(array)
    return tensor


def assert_add_sub_serves(client: grpcclient.InferenceServerClient, model: str = "add_sub") -> None:
    """A valid request to an `add_sub` model succeeds with the right answer."""
    rng = np.random.default_rng()
    a = rng.standard_normal((2, 16), dtype=np.float32)
    b = rng.standard_normal((2, 16), dtype=np.float32)
    result = client.infer(model, [infer_input("a", a), infer_input("b", b)])
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(result.as_numpy("diff"), a - b)


_SESSIONS: dict[Path, ort.InferenceSession] = {}


def reference(repo: Path, model: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs of ONNX Runtime itself on the model's `model.onnx`, by name."""
    path = repo / model / "model.onnx"
    session = _SESSIONS.get(path)
    if session is None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = _SESSIONS[path] = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))
