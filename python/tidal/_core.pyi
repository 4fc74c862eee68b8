"""Typed surface of the Rust extension `tidal._core`.

The extension owns every per-request step: the gRPC front end (KServe v2
`inference.GRPCInferenceService`, `grpc.health.v1`, reflection), tensor
validation, the per-model queues and batch scheduling, batch assembly and the
per-instance worker threads. Python hands it model specifications and one
executor callable per model instance; a worker calls its executor once per
batch with numpy views of the assembled batch buffers.
"""

from collections.abc import Sequence
from typing import Literal, Protocol, TypedDict, final

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
        network_scheduling: `"batch"`: the network threads never preempt a
            running batch when a request arrives (Linux SCHED_BATCH); they
            read it when the batch ends. `"normal"`: the kernel's default.
            Raises ValueError otherwise.
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
        network_scheduling: Literal["batch", "normal"] = "batch",
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
    def statistics(
        self, name: str
    ) -> dict[str, int | float | dict[int, int] | list[dict[str, int | float]]]:
        """Counters of model `name`.

        Keys: inference_count, execution_count, success_count, success_ns,
        fail_count, fail_ns, queue_count, queue_ns, compute_count,
        compute_input_ns, compute_infer_ns, compute_output_ns, admitted_count,
        refused_count (refused at admission, not in fail_count), expired_count
        and cancelled_count (dropped from the queue, in fail_count),
        completed_count, invalid_count (refused as malformed before
        admission, in no other count), queue_depth, batch_sizes (batch size -> number of
        batches), the fitted batch cost (cost_fixed_us, cost_per_row_us and
        cost_tail_factor, floats) and priorities (one dict per level: outcome
        counts, latency quantiles such as end_to_end_p99_us, and
        admission_reserve, a float: the share of a request's time to its
        deadline that admission keeps back at that level). Raises KeyError if
        absent.
        """
        ...
    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls, answer what was admitted, stop the workers (GIL released)."""
        ...
    def wait(self, timeout_s: float | None = None) -> bool:
        """Block (GIL released) until the server stops; False if `timeout_s` passed first."""
        ...

class LoadResult(TypedDict):
    """What a load run measured in its window (after warm-up).

    Per-answer arrays (`intended_s`, `latency_ms`, `sample_send_lag_ms`,
    `sample_receive_lag_ms`, `code`, `class_index`) hold one entry per answer to a request intended
    inside the window, in completion order.
    """

    sent: int
    """Requests intended in the window that were sent (all classes)."""
    sent_by_class: list[int]
    """The same, per class, in the order the classes were given."""
    intended: int
    """Requests the schedule placed in the window."""
    sent_in_window: int
    """Requests actually sent while the window was open: sent_in_window /
    window_s is the rate the generator achieved."""
    window_s: float
    """Length of the window (shorter than asked when the run was stopped)."""
    malformed: int
    """OK answers that failed the checks (outputs, datatypes, shapes, sizes)."""
    malformed_example: str | None
    """Why the first malformed answer failed."""
    unanswered: int
    """Requests sent in the window still unanswered when the drain time ran out."""
    mean_in_flight: float
    """Time-average of the calls in flight over the window (Little's L)."""
    stopped: bool
    """Whether `LoadRun.stop` ended the run early."""
    intended_s: npt.NDArray[np.float64]
    """Per answer: intended send time, seconds from the window's start."""
    latency_ms: npt.NDArray[np.float64]
    """Per answer: from its intended send time to the answer."""
    sample_send_lag_ms: npt.NDArray[np.float64]
    """Per answer: actual minus intended send time."""
    sample_receive_lag_ms: npt.NDArray[np.float64]
    """Per answer: from its last bytes reaching the generator's socket (the
    kernel's receive stamp of its connection's latest read) to the generator
    taking it; at most the time it waited there."""
    code: npt.NDArray[np.int32]
    """Per answer: gRPC status code (0 OK; -1 an OK answer that failed the
    checks; a stream answer with an error message counts as 2, UNKNOWN)."""
    class_index: npt.NDArray[np.int32]
    """Per answer: index of its class."""
    send_lag_ms: npt.NDArray[np.float64]
    """Per request sent: actual minus intended send time."""
    errors: dict[str, int]
    """Failures by gRPC status name (`UNAVAILABLE`, ...)."""
    error_examples: dict[str, str]
    """The first message seen for each failing status."""

class LoadProgress(TypedDict):
    """A look at a run in progress (`LoadRun.progress`)."""

    phase: str
    """`connecting`, `warm-up`, `measuring`, `draining` or `done`."""
    elapsed_s: float
    """Since the load started, warm-up included."""
    sent: int
    answered: int
    errors: int
    recent_rate: float
    """Answers per second over the last one to two seconds."""
    recent_p99_ms: float
    """P99 latency of the successful answers of the last one to two seconds
    (NaN before any)."""

@final
class LoadClass:
    """One kind of traffic in a run: its requests, share and expected answers.

    Args:
        name: shown in reports.
        requests: serialized `ModelInferRequest`s, the class's pool; priority
            and timeout travel in their parameters.
        weight: share of the load relative to the other classes (open loop:
            of the arrivals; closed loop: of the clients).
        expected_outputs: (name, datatype, shape) that every answer must
            carry; -1 in a shape accepts any size. Empty: only the number of
            outputs is checked, against `expected_count`.
        expected_count: outputs per answer when `expected_outputs` is empty.
        repeat_fraction: None sends the pool in turn. A fraction f sends an
            exact copy of a pool entry with probability f and otherwise a
            fresh input, never sent before (the leading elements of the
            first input overwritten with a counter).
        int_range: inclusive range of the values written into fresh
            integer inputs.

    Raises:
        ValueError: a request that does not decode, or a value out of range.
    """

    @property
    def name(self) -> str: ...
    @property
    def weight(self) -> float: ...
    def __init__(
        self,
        name: str,
        requests: Sequence[bytes],
        *,
        weight: float = 1.0,
        expected_outputs: Sequence[tuple[str, str, Sequence[int]]] = (),
        expected_count: int = 1,
        repeat_fraction: float | None = None,
        int_range: tuple[int, int] = (0, 99),
    ) -> None: ...

@final
class LoadRun:
    """A load run against a KServe v2 gRPC server, started at construction
    on a thread of its own (a tokio runtime with one thread).

    Args:
        target: `host:port`.
        classes: the traffic classes, sharing the load by weight.
        mode: `closed` (`concurrency` calls in flight) or `open` (arrivals
            on a schedule, whatever the answers do).
        concurrency: closed loop: calls in flight.
        arrivals: open loop: `poisson` or `uniform` at `rate`/s; `onoff`:
            Poisson at `rate` for `on_s`, then at `off_rate` for `off_s`,
            repeated; `trace`: the arrival times `trace_s` (seconds from
            the start of the run, ascending), played once.
        api: `unary` (ModelInfer) or `stream` (ModelStreamInfer, one stream
            per connection, request ids rewritten).
        connections: HTTP/2 connections to spread calls over.
        warmup_s: load before the window; not recorded.
        duration_s: the measured window.
        drain_s: how long to wait for answers after the last send.
        seed: seeds the arrivals, the class of each arrival and the repeats.
        max_requests: stop sending after this many requests, warm-up
            included; the window then ends with the last one.

    Raises:
        ValueError: a bad mode, api, arrivals or parameter.
    """

    def __init__(
        self,
        target: str,
        classes: Sequence[LoadClass],
        *,
        mode: str = "closed",
        concurrency: int = 1,
        arrivals: str = "poisson",
        rate: float = 0.0,
        on_s: float = 0.0,
        off_s: float = 0.0,
        off_rate: float = 0.0,
        trace_s: Sequence[float] | None = None,
        api: str = "unary",
        connections: int = 4,
        warmup_s: float = 1.0,
        duration_s: float = 5.0,
        drain_s: float = 10.0,
        seed: int = 0,
        max_requests: int | None = None,
    ) -> None: ...
    def progress(self) -> LoadProgress:
        """Live figures; cheap enough to call several times a second."""
        ...
    def stop(self) -> None:
        """Send nothing more; the window ends now, answers in flight are waited for."""
        ...
    def done(self) -> bool:
        """Whether the run has ended."""
        ...
    def wait(self, timeout_s: float | None = None) -> bool:
        """Block (GIL released) until the run ends; False if `timeout_s` passed first.

        Raises:
            KeyboardInterrupt: a signal handler raised it while waiting (the
                run goes on; `stop` it).
        """
        ...
    def result(self) -> LoadResult:
        """Wait for the end (GIL released) and return what was measured.

        Raises:
            RuntimeError: the target could not be reached, or the result was
                already taken.
            KeyboardInterrupt: as in `wait`.
        """
        ...

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
    max_requests: int | None = None,
) -> LoadResult:
    """Drive a KServe v2 gRPC server at `target` with one class of requests
    and wait for the result (GIL released); `LoadRun` does more.

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
        max_requests: stop after this many requests (see `LoadRun`).

    Raises:
        ValueError: bad mode, api or request bytes.
        RuntimeError: the target cannot be reached.
    """
    ...

@final
class EchoServer:
    """A KServe v2 gRPC server that answers at once, to measure a load generator.

    It serves one model whose input `x` comes back as its output `y`
    (same datatype and shape), with no queue and no computation, and
    describes it in ModelMetadata, ModelConfig and ModelStatistics.

    Args:
        host: address to bind.
        port: 0 picks a free one (see `start`'s return value).
        threads: the server runtime's worker threads.
        model: the model's name.
        datatype: of `x` and `y`.
        shape: of `x` and `y`, without the batch dimension when
            `max_batch_size > 0`.
        max_batch_size: reported in ModelConfig; > 0 adds a batch dimension.
        fail_every: every n-th call fails with UNAVAILABLE (0: none).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 1,
        model: str = "echo",
        datatype: str = "FP32",
        shape: Sequence[int] = (16,),
        max_batch_size: int = 0,
        fail_every: int = 0,
    ) -> None: ...
    def start(self) -> int:
        """Bind and serve on threads of its own; returns the bound port.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started.
        """
        ...
    def calls(self) -> int:
        """Inference calls received so far (stream requests included)."""
        ...
    def stop(self) -> None:
        """Stop serving; calls in flight are dropped."""
        ...
