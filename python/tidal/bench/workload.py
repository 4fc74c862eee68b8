"""Requests to send: tensors shaped from a server's model metadata, random or
read from an .npy/.npz file, grouped in traffic classes.

A traffic class (`TrafficClass`) is a share of the load with its own request
parameters (`priority`, `timeout`) and, optionally, its own latency
objective, so online and batch traffic can be mixed in one run and reported
apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from .. import _core
from ..client import Client, build_request, numpy_dtype

__all__ = [
    "TensorInfo",
    "TrafficClass",
    "Workload",
    "load_input_file",
    "make_workload",
    "random_tensor",
]

_MAX_POOL = 4096
"""Most distinct requests built from an input file: enough variety for any
cache, small enough to hold in memory."""


@dataclass(frozen=True)
class TrafficClass:
    """One kind of traffic in a run.

    Attributes:
        name: shown in reports.
        weight: share of the load, relative to the other classes.
        priority: the request's `priority` parameter (1 is the highest); None
            leaves it out.
        timeout_ms: the request's `timeout` parameter, in milliseconds (sent
            as microseconds, as the protocol wants); None leaves it out.
        slo_ms: this class's latency objective for its goodput and pass/fail;
            None uses the run's `--slo-ms`.
    """

    name: str = "all"
    weight: float = 1.0
    priority: int | None = None
    timeout_ms: float | None = None
    slo_ms: float | None = None

    @classmethod
    def parse(cls, text: str) -> TrafficClass:
        """Parse `NAME[:key=value,...]` with keys weight, priority, timeout-ms, slo-ms.

        Example: `online:weight=0.8,priority=1,timeout-ms=20`.

        Raises:
            ValueError: a malformed spec, an unknown key or a bad value.
        """
        name, _, rest = text.partition(":")
        if not re.fullmatch(r"[\w.-]+", name):
            raise ValueError(f"class `{text}`: the name must be letters, digits, `_`, `.` or `-`")
        values: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip().replace("_", "-")
            if not eq:
                raise ValueError(f"class `{text}`: `{item}` is not key=value")
            try:
                if key == "weight":
                    values["weight"] = float(value)
                elif key == "priority":
                    values["priority"] = int(value)
                elif key == "timeout-ms":
                    values["timeout_ms"] = float(value)
                elif key == "slo-ms":
                    values["slo_ms"] = float(value)
                else:
                    raise ValueError(
                        f"class `{text}`: unknown key `{key}`; expected weight, priority,"
                        " timeout-ms or slo-ms"
                    )
            except ValueError as exc:
                if "unknown key" in str(exc):
                    raise
                raise ValueError(f"class `{text}`: `{value}` is not a valid {key}") from None
        spec = cls(name=name, **values)
        if not (math.isfinite(spec.weight) and spec.weight > 0):
            raise ValueError(f"class `{text}`: the weight must be positive, got `{spec.weight}`")
        if spec.priority is not None and spec.priority < 0:
            raise ValueError(f"class `{text}`: the priority must be >= 0")
        if spec.timeout_ms is not None and spec.timeout_ms < 0:
            raise ValueError(f"class `{text}`: the timeout must be >= 0")
        return spec


@dataclass(frozen=True)
class TensorInfo:
    """An input or output as the server describes it (batch dimension included)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Workload:
    """Serialized requests for one model, per traffic class, and what every
    answer must carry.

    Attributes:
        model: the model's name.
        requests: the first class's request pool (serialized ModelInferRequests).
        expected_outputs: outputs per answer.
        batch_size: rows per request (1 for a model that does not batch).
        classes: the traffic classes.
        class_requests: each class's request pool, in the order of `classes`.
        outputs: (name, datatype, shape) every answer must carry; -1 accepts any size.
        repeat_fraction: see `tidal._core.LoadClass`.
        int_range: inclusive range of random and fresh integer inputs.
        max_batch_size: the server's ModelConfig value (0: the model does not
            batch); None when the server has no ModelConfig.
    """

    model: str
    requests: list[bytes]
    expected_outputs: int
    batch_size: int
    classes: tuple[TrafficClass, ...] = (TrafficClass(),)
    class_requests: tuple[list[bytes], ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    repeat_fraction: float | None = None
    int_range: tuple[int, int] = (0, 99)
    max_batch_size: int | None = 0
    inputs: tuple[TensorInfo, ...] = field(default=(), repr=False)

    def load_classes(self) -> list[_core.LoadClass]:
        """The classes as the load generator takes them."""
        pools = self.class_requests or (self.requests,)
        expected = [(o.name, o.datatype, list(o.shape)) for o in self.outputs]
        return [
            _core.LoadClass(
                spec.name,
                pool,
                weight=spec.weight,
                expected_outputs=expected,
                expected_count=self.expected_outputs,
                repeat_fraction=self.repeat_fraction,
                int_range=self.int_range,
            )
            for spec, pool in zip(self.classes, pools, strict=True)
        ]


def random_tensor(
    rng: np.random.Generator, datatype: str, shape: tuple[int, ...], int_range: tuple[int, int]
) -> npt.NDArray[Any]:
    """Random values of `datatype` in `shape`: normal floats, integers within
    `int_range` (inclusive, clipped to the type), 8 random bytes per BYTES element."""
    if datatype == "BYTES":
        flat = [rng.bytes(8) for _ in range(int(np.prod(shape)))]
        return np.array(flat, dtype=object).reshape(shape)
    dtype = numpy_dtype(datatype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    info = np.iinfo(dtype)
    low, high = max(int_range[0], int(info.min)), min(int_range[1], int(info.max))
    return rng.integers(low, high, shape, endpoint=True).astype(dtype)


def load_input_file(path: Path, inputs: Sequence[TensorInfo]) -> dict[str, npt.NDArray[Any]]:
    """Arrays by input name from an .npz (keys = input names) or an .npy
    (a model with one input).

    Raises:
        ValueError: the file's names do not match the model's inputs, or a
            dtype cannot be cast to the input's datatype.
        OSError: the file cannot be read.
    """
    names = [t.name for t in inputs]
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    elif path.suffix == ".npy":
        if len(names) != 1:
            raise ValueError(
                f"`{path}` holds one array, the model has {len(names)} inputs"
                f" ({', '.join(names)}); use an .npz with one array per input name"
            )
        arrays = {names[0]: np.load(path, allow_pickle=False)}
    else:
        raise ValueError(f"`{path}`: input files must be .npy or .npz")
    missing = [n for n in names if n not in arrays]
    unknown = [k for k in arrays if k not in names]
    if missing or unknown:
        raise ValueError(
            f"`{path}`: arrays {sorted(arrays)} do not match the model's inputs {names}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else "")
        )
    converted = {}
    for info in inputs:
        array = arrays[info.name]
        if info.datatype == "BYTES":
            converted[info.name] = array.astype(object)
            continue
        dtype = numpy_dtype(info.datatype)
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise ValueError(
                f"`{path}`: array `{info.name}` is {array.dtype}, the input is"
                f" {info.datatype} ({dtype}); convert it first"
            )
        converted[info.name] = array.astype(dtype, copy=False)
    return converted


def _file_samples(
    arrays: Mapping[str, npt.NDArray[Any]],
    inputs: Sequence[TensorInfo],
    batches: bool,
    batch_size: int,
) -> list[dict[str, npt.NDArray[Any]]]:
    """The file's samples cut into request inputs.

    A batching model takes arrays of rows, `batch_size` rows per request. A
    model that does not batch takes one sample per request: an array with
    the input's rank is one sample, one with a leading extra dimension is
    a list of samples.
    """
    samples: dict[str, npt.NDArray[Any]] = {}
    for info in inputs:
        array = arrays[info.name]
        rank = len(info.shape)
        if not batches and array.ndim == rank:
            array = array[np.newaxis]
        if array.ndim != (rank if batches else rank + 1):
            want = (
                f"rows of {list(info.shape[1:])}" if batches else f"samples of {list(info.shape)}"
            )
            raise ValueError(
                f"input `{info.name}`: the file's array has shape {list(arrays[info.name].shape)};"
                f" the model takes {want}"
            )
        samples[info.name] = array
    counts = sorted({a.shape[0] for a in samples.values()})
    if len(counts) != 1:
        raise ValueError(f"the file's arrays hold different numbers of samples: {counts}")
    n = counts[0]
    if n == 0:
        raise ValueError("the input file holds no samples")
    step = batch_size if batches else 1
    pool = []
    for k in range(min(_MAX_POOL, max(1, n // step))):
        rows = [(k * step + i) % n for i in range(step)]
        pool.append({name: a[rows] if batches else a[rows[0]] for name, a in samples.items()})
    return pool


def make_workload(
    target: str,
    model: str,
    *,
    count: int = 64,
    batch_size: int = 1,
    int_range: tuple[int, int] = (0, 99),
    seed: int = 0,
    input_file: Path | None = None,
    classes: Sequence[TrafficClass] = (TrafficClass(),),
    repeat_fraction: float | None = None,
) -> Workload:
    """Build request pools for `model` from the server's metadata.

    Without `input_file`, `count` requests of random data: variable
    dimensions other than the batch become 1; the batch dimension (models
    whose ModelConfig has max_batch_size > 0) becomes `batch_size`; integer
    inputs are drawn from `int_range` (inclusive), so token ids stay inside a
    vocabulary. With `input_file` (.npy/.npz), the file's samples, `batch_size`
    rows per request.

    Every class gets the same inputs, with its own `priority` and `timeout`
    parameters.

    Raises:
        grpc.RpcError: the server does not know `model`.
        ValueError: the input file does not fit the model.
    """
    from .._proto import grpc_service_pb2 as pb  # the stubs are only needed here

    if not classes:
        raise ValueError("at least one traffic class is needed")
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"traffic class names must differ: {names}")
    rng = np.random.default_rng(seed)
    with Client(target) as client:
        metadata = client.model_metadata(model)
        try:
            max_batch_size = int(
                client.stub.ModelConfig(pb.ModelConfigRequest(name=model)).config.max_batch_size
            )
        except grpc.RpcError:
            # ModelConfig is a Triton extension that plain KServe v2 servers
            # lack: a leading variable dimension on every input is taken
            # for the batch then (its limit unknown).
            max_batch_size = -1
    batches = max_batch_size > 0 or (
        max_batch_size < 0
        and bool(metadata.inputs)
        and all(len(t.shape) > 0 and t.shape[0] == -1 for t in metadata.inputs)
    )
    rows = batch_size if batches else 1

    def shaped(tensor: Any) -> tuple[int, ...]:
        dims = [int(d) for d in tensor.shape]
        if batches and dims:
            dims[0] = batch_size
        return tuple(dims)

    inputs = tuple(TensorInfo(t.name, t.datatype, shaped(t)) for t in metadata.inputs)
    if input_file is not None:
        arrays = load_input_file(input_file, inputs)
        samples = _file_samples(arrays, inputs, batches, batch_size)
    else:
        samples = [
            {
                t.name: random_tensor(rng, t.datatype, tuple(max(d, 1) for d in t.shape), int_range)
                for t in inputs
            }
            for _ in range(count)
        ]
    pools = []
    for spec in classes:
        timeout_us = None if spec.timeout_ms is None else round(spec.timeout_ms * 1000)
        pools.append(
            [
                build_request(
                    model, sample, priority=spec.priority, timeout_us=timeout_us
                ).SerializeToString()
                for sample in samples
            ]
        )
    outputs = tuple(TensorInfo(t.name, t.datatype, shaped(t)) for t in metadata.outputs)
    return Workload(
        model=model,
        requests=pools[0],
        expected_outputs=len(metadata.outputs),
        batch_size=rows,
        classes=tuple(classes),
        class_requests=tuple(pools),
        outputs=outputs,
        repeat_fraction=repeat_fraction,
        int_range=int_range,
        max_batch_size=None if max_batch_size < 0 else max_batch_size,
        inputs=inputs,
    )
