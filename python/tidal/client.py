"""A small typed client for tidal and any KServe v2 gRPC server.

Built on the stubs generated from the repository's `proto/` files. For the
full Triton client API, `tritonclient.grpc` works against tidal unchanged.

Example:
    >>> with Client("127.0.0.1:8001") as client:
    ...     outputs = client.infer("mlp", {"x": np.ones((1, 512), np.float32)})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from ._proto import grpc_service_pb2 as pb
from ._proto import grpc_service_pb2_grpc as pb_grpc

__all__ = [
    "MAX_MESSAGE_BYTES",
    "STREAM_ERROR_CODE",
    "Client",
    "build_request",
    "decode_response",
    "from_raw",
    "kserve_datatype",
    "numpy_dtype",
    "to_raw",
]

MAX_MESSAGE_BYTES = 2**31 - 1

STREAM_ERROR_CODE = "grpc_status_code"
"""The parameter of a streamed error's response that holds its gRPC status
code (INT64), which the protocol's stream messages have no field for."""

_NUMPY_TO_KSERVE = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}
_KSERVE_TO_NUMPY = {name: dtype for dtype, name in _NUMPY_TO_KSERVE.items()}


def kserve_datatype(array: npt.NDArray[Any]) -> str:
    """The KServe datatype of `array` (object and bytes arrays are BYTES).

    Raises:
        ValueError: for a dtype the protocol has no datatype for.
    """
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        # Any byte order: `to_raw` converts to the protocol's little-endian.
        return _NUMPY_TO_KSERVE[array.dtype.newbyteorder("=")]
    except KeyError:
        raise ValueError(f"dtype `{array.dtype}` has no KServe datatype") from None


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The native-order numpy dtype of a fixed-size KServe datatype.

    Raises:
        KeyError: for BYTES (an object array, no fixed dtype) or an unknown name.
    """
    return _KSERVE_TO_NUMPY[datatype]


def to_raw(array: npt.NDArray[Any]) -> bytes:
    """`array` in the protocol's raw layout (little-endian, BYTES length-prefixed)."""
    if kserve_datatype(array) == "BYTES":
        parts = []
        for item in array.ravel():
            data = item.encode() if isinstance(item, str) else bytes(item)
            parts.append(len(data).to_bytes(4, "little") + data)
        return b"".join(parts)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def from_raw(data: bytes, datatype: str, shape: Sequence[int]) -> npt.NDArray[Any]:
    """Decode a raw tensor; BYTES becomes an object array of `bytes`."""
    if datatype == "BYTES":
        items, at = [], 0
        while at < len(data):
            n = int.from_bytes(data[at : at + 4], "little")
            items.append(data[at + 4 : at + 4 + n])
            at += 4 + n
        return np.array(items, dtype=object).reshape(tuple(shape))
    dtype = numpy_dtype(datatype).newbyteorder("<")
    return np.frombuffer(data, dtype=dtype).reshape(tuple(shape))


class Client:
    """A blocking KServe v2 gRPC client.

    Args:
        target: `host:port` of the server.
        max_message_bytes: send and receive limit, as large as tritonclient's by default.
    """

    def __init__(self, target: str, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def is_live(self) -> bool:
        """ServerLive."""
        return bool(self.stub.ServerLive(pb.ServerLiveRequest()).live)

    def is_ready(self) -> bool:
        """ServerReady."""
        return bool(self.stub.ServerReady(pb.ServerReadyRequest()).ready)

    def model_metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        """ModelMetadata of `model`."""
        return self.stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        *,
        outputs: Sequence[str] = (),
        request_id: str = "",
        priority: int | None = None,
        timeout_us: int | None = None,
        deadline_s: float | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """Run `model` on `inputs` and return its outputs by name.

        Args:
            model: model name.
            inputs: arrays by input name, batch dimension first for batching models.
            outputs: names of the outputs wanted; empty for all.
            request_id: echoed by the server.
            priority: priority level, 1 the highest.
            timeout_us: the request's own queueing deadline, in microseconds.
            deadline_s: the gRPC deadline of the call.

        Raises:
            grpc.RpcError: with the server's status code and message.
        """
        request = build_request(
            model,
            inputs,
            outputs=outputs,
            request_id=request_id,
            priority=priority,
            timeout_us=timeout_us,
        )
        response = self.stub.ModelInfer(request, timeout=deadline_s)
        return decode_response(response)


def build_request(
    model: str,
    inputs: Mapping[str, npt.NDArray[Any]],
    *,
    outputs: Sequence[str] = (),
    request_id: str = "",
    priority: int | None = None,
    timeout_us: int | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest carrying `inputs` as raw contents."""
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    for name, array in inputs.items():
        tensor = request.inputs.add(name=name, datatype=kserve_datatype(array))
        tensor.shape.extend(array.shape)
        request.raw_input_contents.append(to_raw(array))
    for name in outputs:
        request.outputs.add(name=name)
    if priority is not None:
        request.parameters["priority"].uint64_param = priority
    if timeout_us is not None:
        request.parameters["timeout"].int64_param = timeout_us
    return request


def decode_response(response: pb.ModelInferResponse) -> dict[str, npt.NDArray[Any]]:
    """The outputs of a ModelInferResponse by name."""
    return {
        out.name: from_raw(raw, out.datatype, out.shape)
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
