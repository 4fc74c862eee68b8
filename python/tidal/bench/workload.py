"""Requests to send: random tensors shaped from a server's model metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..client import Client, build_request

__all__ = ["Workload", "make_workload"]

_NUMPY = {
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


@dataclass(frozen=True)
class Workload:
    """Serialized requests for one model, and what every answer must carry."""

    model: str
    requests: list[bytes]
    expected_outputs: int
    batch_size: int


def _random_tensor(
    rng: np.random.Generator, datatype: str, shape: tuple[int, ...], int_range: tuple[int, int]
) -> npt.NDArray[Any]:
    if datatype == "BYTES":
        flat = [rng.bytes(8) for _ in range(int(np.prod(shape)))]
        return np.array(flat, dtype=object).reshape(shape)
    dtype = np.dtype(_NUMPY[datatype])
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    info = np.iinfo(dtype)
    low, high = max(int_range[0], int(info.min)), min(int_range[1], int(info.max))
    return rng.integers(low, high, shape, endpoint=True).astype(dtype)


def make_workload(
    target: str,
    model: str,
    *,
    count: int = 64,
    batch_size: int = 1,
    int_range: tuple[int, int] = (0, 99),
    seed: int = 0,
) -> Workload:
    """Build `count` distinct requests for `model` from the server's metadata.

    Variable dimensions other than the batch become 1; the batch dimension
    (models whose ModelConfig has max_batch_size > 0) becomes `batch_size`.
    Integer inputs are drawn from `int_range` (inclusive), so token ids stay
    inside a vocabulary.

    Raises:
        grpc.RpcError: the server does not know `model`.
    """
    from .._proto import grpc_service_pb2 as pb  # the stubs are only needed here

    rng = np.random.default_rng(seed)
    with Client(target) as client:
        metadata = client.model_metadata(model)
        config = client.stub.ModelConfig(pb.ModelConfigRequest(name=model)).config
    batches = config.max_batch_size > 0
    requests = []
    for _ in range(count):
        inputs = {}
        for tensor in metadata.inputs:
            dims = [int(d) for d in tensor.shape]
            if batches:
                dims[0] = batch_size
            shape = tuple(d if d >= 0 else 1 for d in dims)
            inputs[tensor.name] = _random_tensor(rng, tensor.datatype, shape, int_range)
        requests.append(build_request(model, inputs).SerializeToString())
    return Workload(model, requests, len(metadata.outputs), batch_size if batches else 1)
