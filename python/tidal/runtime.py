"""ONNX Runtime executors: the Python callables the core runs batches with.

One `OrtExecutor` owns one `onnxruntime.InferenceSession`, and a model gets
one executor per instance (`[instances] count`). The core's worker thread for
that instance calls it once per batch, with the GIL held; ONNX Runtime
releases the GIL while it computes, so instances of one model, and the
models beside it, run in parallel.

ONNX string tensors hold UTF-8 text, while KServe BYTES tensors hold
arbitrary bytes: inputs are decoded from UTF-8 on the way in and outputs
are encoded on the way out. The server refuses a request whose BYTES are
not UTF-8 at submit (`INVALID_ARGUMENT`), so the check here only guards
direct callers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from .config import DEFAULT_PROVIDERS
from .errors import ModelError

__all__ = ["OrtExecutor", "select_providers"]

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"

_STRING = "tensor(string)"

_NUMPY_TYPES: dict[str, type[np.generic]] = {
    "tensor(bool)": np.bool_,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}
"""ONNX Runtime's type strings with the numpy types its Python API takes for them."""


def select_providers(requested: Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """Choose the execution providers a session is created with.

    Args:
        requested: providers in order of preference, as in `[instances] providers`.
        available: what this ONNX Runtime build offers; defaults to
            `onnxruntime.get_available_providers()`.

    Returns:
        The requested providers that are available, in the requested order,
        with the CPU provider last unless it was requested earlier: ONNX
        Runtime runs on it whatever the others cannot run.
    """
    offered = set(ort.get_available_providers() if available is None else available)
    chosen = [p for p in dict.fromkeys(requested) if p in offered]
    missing = [p for p in requested if p not in offered]
    if missing:
        known = set(ort.get_all_providers())
        for name in missing:
            if name in known:
                # Expected on CPU-only machines for the default CUDA entry: not a warning.
                logger.debug("execution provider `%s` is not available here", name)
            else:
                logger.warning("unknown execution provider `%s`; ignoring it", name)
    if CPU_PROVIDER not in chosen:
        chosen.append(CPU_PROVIDER)
    return chosen


def _text_decoder(name: str) -> np.ufunc:
    """An elementwise converter from the `bytes` of input `name` to `str`."""

    def decode(value: object) -> str:
        if isinstance(value, str):
            return value
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ValueError(
                f"input `{name}` holds a `{type(value).__name__}`; BYTES elements must be bytes"
            )
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start : exc.end]
            raise ValueError(
                f"input `{name}` holds bytes that are not UTF-8 (`{bad!r}` at byte"
                f" {exc.start}); ONNX string tensors hold UTF-8 text"
            ) from None

    return np.frompyfunc(decode, 1, 1)


def _encode(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"string output holds a `{type(value).__name__}`")


_to_bytes = np.frompyfunc(_encode, 1, 1)


class OrtExecutor:
    """Runs batches of one model on one ONNX Runtime session.

    Implements the `tidal._core.Executor` protocol.

    Args:
        model_path: the `model.onnx` to load.
        intra_op_threads: threads ONNX Runtime uses inside one operator;
            0 lets ONNX Runtime choose (one per core).
        providers: execution providers in order of preference; see
            `select_providers`.

    Raises:
        ModelError: ONNX Runtime cannot load the model (its message says why).
    """

    def __init__(
        self,
        model_path: Path,
        *,
        intra_op_threads: int = 1,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # Parallelism across batches comes from instances, each its own
        # session on its own worker thread; inside one session, a second
        # pool would only compete with them for the cores.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.model_path = model_path
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=select_providers(providers)
            )
        except Exception as exc:
            # ONNX Runtime's exceptions derive from Exception alone, one class per status.
            raise ModelError(f"ONNX Runtime cannot load `{model_path}`: {exc}") from exc
        self._string_inputs = {
            i.name: _text_decoder(i.name) for i in self._session.get_inputs() if i.type == _STRING
        }
        self._string_outputs = frozenset(
            o.name for o in self._session.get_outputs() if o.type == _STRING
        )

    @property
    def providers(self) -> list[str]:
        """The execution providers the session uses, the preferred one first."""
        return list(self._session.get_providers())

    def __call__(
        self, inputs: dict[str, npt.NDArray[np.generic]], outputs: list[str]
    ) -> list[npt.NDArray[np.generic]]:
        """Run one batch.

        Args:
            inputs: one array per model input, the batch first; BYTES inputs
                as object arrays of `bytes`.
            outputs: the outputs to compute, in the order to return them.

        Returns:
            One C-contiguous array per name in `outputs`; BYTES outputs as
            object arrays of `bytes`.

        Raises:
            ValueError: a BYTES input holds bytes that are not UTF-8.
        """
        feeds: dict[str, Any] = inputs
        if self._string_inputs:
            feeds = dict(inputs)
            for name, decode in self._string_inputs.items():
                if name in feeds:
                    feeds[name] = np.asarray(decode(feeds[name]), dtype=object)
        results = self._session.run(outputs, feeds)
        arrays: list[npt.NDArray[np.generic]] = []
        for name, result in zip(outputs, results, strict=True):
            if name in self._string_outputs:
                arrays.append(np.asarray(_to_bytes(result), dtype=object))
            else:
                arrays.append(np.ascontiguousarray(result))
        return arrays

    def warmup(self) -> bool:
        """Run the model once on zeros at batch size 1.

        The first run of a session allocates its buffers and, on a GPU,
        picks kernels; doing it here keeps that cost out of the first
        request's latency.

        Returns:
            False when the model was not run: it has a string or bfloat16
            input, or a variable dimension other than the first, whose size
            a warm-up cannot guess.

        Raises:
            Exception: whatever ONNX Runtime raises when the model fails on zeros.
        """
        feeds: dict[str, npt.NDArray[np.generic]] = {}
        for spec in self._session.get_inputs():
            dtype = _NUMPY_TYPES.get(spec.type)
            if dtype is None:
                return False
            shape: list[int] = []
            for axis, dim in enumerate(spec.shape):
                if isinstance(dim, int) and dim >= 0:
                    shape.append(dim)
                elif axis == 0:
                    shape.append(1)
                else:
                    return False
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
        self._session.run(None, feeds)
        return True
