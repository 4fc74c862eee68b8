"""Typed surface of the Rust extension `tidal._core`.

The extension owns every per-request step: the gRPC front end (KServe v2
`inference.GRPCInferenceService`, `grpc.health.v1`, reflection), tensor
validation, the per-model queues and batch scheduling, batch assembly and the
per-instance worker threads. Python hands it model specifications and one
executor callable per model instance; a worker calls its executor once per
batch with numpy views of the assembled batch buffers.
"""

from collections.abc import Sequence
from typing import Protocol, TypedDict, final

import numpy as np
import numpy.typing as npt

__version__: str

class Executor(Protocol):
    """Runs one batch.

    Called from the instance's worker thread with the GIL held. `inputs` maps
    each model input name to an array whose first dimension is the batch
    (BYTES tensors arrive as numpy object arrays of `bytes`). Returns one array
    per name in `outputs`, in that order, each with the batch as its first
    dimension. Any exception fails this batch only (INTERNAL, with its message).
    """

    def __call__(
        self, inputs: dict[str, npt.NDArray[np.generic]], outputs: list[str]
    ) -> Sequence[npt.NDArray[np.generic]]: ...

class RepositoryHooks(Protocol):
    """What the server calls for the repository RPCs (on a blocking thread)."""

    def index(self) -> list[tuple[str, str, str, str]]:
        """Rows of (name, version, state, reason) for every model in the repository."""
        ...

    def load(self, name: str) -> None:
        """Load (or reload) model `name` and `Server.add_model` it. Raises KeyError if unknown."""
        ...

    def unload(self, name: str) -> None:
        """Unload model `name` (`Server.remove_model`). Raises KeyError if unknown."""
        ...

@final
class TensorSpec:
    """One input or output of a model.

    `shape` excludes the batch dimension when the model batches
    (`max_batch_size > 0`); -1 marks a variable dimension. `datatype` is a
    KServe datatype string (FP32, INT64, BYTES, ...).
    """

    name: str
    datatype: str
    shape: list[int]
    def __init__(self, name: str, datatype: str, shape: Sequence[int]) -> None: ...

@final
class ModelSpec:
    """Everything the core needs to serve one model version.

    Raises ValueError (naming the field) when a value is out of range.
    """

    name: str
    version: str
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    policy: str
    slo_ms: float
    max_queue_delay_us: int
    preferred_batch_sizes: list[int]
    queue_capacity: int
    priority_levels: int
    instance_count: int
    def __init__(
        self,
        name: str,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        version: str = "1",
        platform: str = "onnxruntime_onnx",
        max_batch_size: int = 64,
        policy: str = "adaptive",
        slo_ms: float = 50.0,
        max_queue_delay_us: int = 0,
        preferred_batch_sizes: Sequence[int] = (),
        queue_capacity: int = 4096,
        priority_levels: int = 2,
        instance_count: int = 1,
    ) -> None: ...

@final
class Server:
    """The gRPC server and the models it serves.

    Args:
        host: address to bind.
        port: gRPC port; 0 picks a free one (see `start`'s return value).
        max_message_bytes: largest request or response message accepted.
        runtime_threads: tokio worker threads; 0 means one per available core.
        name: reported by ServerMetadata.
        version: reported by ServerMetadata.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8001,
        max_message_bytes: int = 2147483647,
        runtime_threads: int = 0,
        name: str = "tidal",
        version: str = ...,
    ) -> None: ...
    def start(self) -> int:
        """Bind and serve in the background; returns the bound port.

        Raises OSError when the address cannot be bound.
        """
        ...
    def set_repository(self, hooks: RepositoryHooks) -> None:
        """Install the handler of RepositoryIndex/ModelLoad/ModelUnload."""
        ...
    def add_model(self, spec: ModelSpec, executors: Sequence[Executor]) -> None:
        """Serve `spec` with one worker thread per executor, replacing a model of the same name.

        A replaced model finishes what it had admitted before its workers stop.
        """
        ...
    def remove_model(self, name: str) -> None:
        """Stop serving `name`; what it admitted is still answered. Raises KeyError if absent."""
        ...
    def model_names(self) -> list[str]:
        """Names of the models being served."""
        ...
    def set_ready(self, ready: bool) -> None:
        """Sets ServerReady and the health status of the whole server."""
        ...
    def statistics(self, name: str) -> dict[str, int | dict[int, int]]:
        """Counters of model `name`.

        Keys: inference_count, execution_count, success_count, success_ns,
        fail_count, fail_ns, queue_count, queue_ns, compute_count,
        compute_input_ns, compute_infer_ns, compute_output_ns, refused_count
        (refused at admission, not in fail_count), expired_count and
        cancelled_count (dropped from the queue, in fail_count), queue_depth and
        batch_sizes (batch size -> number of batches). Raises KeyError if absent.
        """
        ...
    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls, answer what was admitted, stop the workers (GIL released)."""
        ...
    def wait(self, timeout_s: float | None = None) -> bool:
        """Block (GIL released) until the server stops; False if `timeout_s` passed first."""
        ...

class LoadResult(TypedDict):
    """What `run_load` measured in its window (after warm-up)."""

    sent: int
    """Requests whose intended send time fell in the window."""
    window_s: float
    malformed: int
    """Answers without the expected number of outputs."""
    intended_s: npt.NDArray[np.float64]
    """Per answer: intended send time, seconds from the window's start."""
    latency_ms: npt.NDArray[np.float64]
    """Per answer: from its intended send time to the answer."""
    code: npt.NDArray[np.int32]
    """Per answer: gRPC status code (0 OK; stream errors count as 2, UNKNOWN)."""
    send_lag_ms: npt.NDArray[np.float64]
    """Per request sent: actual minus intended send time."""
    errors: dict[str, int]
    """Failures by gRPC status name."""
    error_examples: dict[str, str]
    """The first message seen for each failing status."""

def run_load(
    target: str,
    requests: Sequence[bytes],
    *,
    mode: str = "closed",
    concurrency: int = 1,
    rate: float = 0.0,
    api: str = "unary",
    connections: int = 4,
    warmup_s: float = 1.0,
    duration_s: float = 5.0,
    expected_outputs: int = 1,
    seed: int = 0,
) -> LoadResult:
    """Drive a KServe v2 gRPC server at `target` (GIL released, own tokio runtime).

    Args:
        target: `host:port`.
        requests: serialized `ModelInferRequest`s, sent in turn.
        mode: `closed` (`concurrency` calls in flight) or `open` (Poisson at `rate`/s).
        api: `unary` (ModelInfer) or `stream` (ModelStreamInfer, ids rewritten).
        connections: HTTP/2 connections to spread calls over.
        warmup_s: load before the window; not recorded.
        duration_s: the measured window.
        expected_outputs: outputs every answer must carry.
        seed: seeds the arrival process.

    Raises:
        ValueError: bad mode, api or request bytes.
        RuntimeError: the target cannot be reached.
    """
    ...
