"""The model repository: one folder per model, and the models being served.

```
models/
├── mlp/
│   ├── model.onnx      required
│   └── tidal.toml      optional; see `tidal.config`
└── cnn/
    └── model.onnx
```

`ModelRepository` reads folders: a model's configuration, and its signature
from the ONNX graph itself, turned into the `tidal._core.ModelSpec` the core
serves. `RepositoryManager` puts models into a running `tidal._core.Server`
and takes them out again; it is also what the server calls for the
RepositoryIndex, ModelLoad and ModelUnload RPCs.

# Batch dimension

When `max_batch_size > 0`, the first dimension of every input and output
is the batch: it must be variable in the ONNX model, and it is left out of
the shapes in the model's signature (KServe and Triton do the same). When
`tidal.toml` does not set `max_batch_size` and the model has a fixed first
dimension somewhere, the model is served without batching
(`max_batch_size = 0`), so that a folder holding only a `model.onnx` serves.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import NamedTuple

import onnx

from . import _core
from .config import ModelConfig
from .errors import ModelError, ModelNotFoundError, TidalError
from .runtime import OrtExecutor

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "ONNX_TO_KSERVE",
    "ModelRepository",
    "RepositoryManager",
    "Signature",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CONFIG_FILE = "tidal.toml"
PLATFORM = "onnxruntime_onnx"

ONNX_TO_KSERVE: dict[int, str] = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.STRING: "BYTES",
    onnx.TensorProto.BFLOAT16: "BF16",
}
"""ONNX element types tidal serves, with their KServe datatype names."""

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
LOADING = "LOADING"


class Signature(NamedTuple):
    """A model's inputs and outputs, as the core validates requests against them."""

    inputs: list[_core.TensorSpec]
    outputs: list[_core.TensorSpec]


class _Tensor(NamedTuple):
    """An input or output as the ONNX graph declares it, batch dimension included."""

    kind: str  # "input" or "output", for messages
    name: str
    datatype: str
    dims: list[int]  # -1 where the graph has a symbolic or unknown dimension


class ModelRepository:
    """A directory with one folder per model.

    Every call reads the folder afresh, so that a reload picks up a changed
    `model.onnx` or `tidal.toml`.

    Args:
        root: the repository directory.

    Raises:
        NotADirectoryError: `root` is not a directory.
    """

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise NotADirectoryError(f"model repository `{root}` is not a directory")
        self.root = root

    def names(self) -> list[str]:
        """Names of the model folders, sorted; hidden folders are not models."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name[0] != ".")

    def path(self, name: str) -> Path:
        """The folder of model `name`.

        Raises:
            ModelNotFoundError: there is no such folder.
        """
        # Checking against the listing, not joining paths, keeps a name that
        # arrives over gRPC (`../etc`) from reaching outside the repository.
        if name not in self.names():
            raise ModelNotFoundError(f"no model `{name}` in repository `{self.root}`")
        return self.root / name

    def config(self, name: str) -> ModelConfig:
        """The configuration model `name` is served with.

        Args:
            name: the model's folder name.

        Returns:
            The `tidal.toml` settings (defaults if there is no file), with
            `max_batch_size` set to 0 when the file leaves it out and the
            model cannot batch.

        Raises:
            ModelNotFoundError: there is no such folder.
            ConfigError: `tidal.toml` is invalid.
            ModelError: the model cannot be read, or cannot batch although
                `tidal.toml` says it does.
        """
        return self._describe(name)[0]

    def signature(self, name: str) -> Signature:
        """The inputs and outputs of model `name`, read from its ONNX graph.

        Shapes leave out the batch dimension when the model batches; -1
        marks a variable dimension.

        Raises:
            ModelNotFoundError: there is no such folder.
            ConfigError: `tidal.toml` is invalid.
            ModelError: the model cannot be read, has a datatype tidal does
                not serve, or cannot batch although `tidal.toml` says it does.
        """
        return self._describe(name)[1]

    def spec(self, name: str) -> _core.ModelSpec:
        """What the core needs to serve model `name`: its configuration and signature.

        Raises:
            ModelNotFoundError: there is no such folder.
            ConfigError: `tidal.toml` is invalid.
            ModelError: the model cannot be served as configured.
        """
        config, signature = self._describe(name)
        return _model_spec(name, config, signature)

    def describe(self, name: str) -> tuple[ModelConfig, Signature]:
        """`config(name)` and `signature(name)` together, reading the folder once.

        Raises:
            ModelNotFoundError: there is no such folder.
            ConfigError: `tidal.toml` is invalid.
            ModelError: the model cannot be served as configured.
        """
        return self._describe(name)

    def _describe(self, name: str) -> tuple[ModelConfig, Signature]:
        folder = self.path(name)
        config_file = folder / CONFIG_FILE
        config = ModelConfig.from_toml(config_file) if config_file.is_file() else ModelConfig()
        tensors = _read_tensors(name, folder / MODEL_FILE)

        unbatchable = _first_unbatchable(tensors)
        if config.max_batch_size > 0 and unbatchable is not None:
            if "max_batch_size" in config.explicit_keys or config.batching.preferred_batch_sizes:
                raise ModelError(
                    f"model `{name}`: {unbatchable}, but `max_batch_size ="
                    f" {config.max_batch_size}` makes that the batch dimension; set"
                    f" `max_batch_size = 0` in `{config_file}`, or export the model"
                    " with a variable first dimension"
                )
            logger.info("model %s: %s, so it is served without batching", name, unbatchable)
            config = dataclasses.replace(config, max_batch_size=0)

        strip = 1 if config.max_batch_size > 0 else 0
        specs = {
            kind: [
                _core.TensorSpec(t.name, t.datatype, t.dims[strip:])
                for t in tensors
                if t.kind == kind
            ]
            for kind in ("input", "output")
        }
        return config, Signature(specs["input"], specs["output"])


def _model_spec(name: str, config: ModelConfig, signature: Signature) -> _core.ModelSpec:
    try:
        return _core.ModelSpec(
            name,
            signature.inputs,
            signature.outputs,
            version=config.version,
            platform=PLATFORM,
            max_batch_size=config.max_batch_size,
            policy=config.batching.policy,
            slo_ms=config.batching.slo_ms,
            max_queue_delay_us=config.batching.max_queue_delay_us,
            preferred_batch_sizes=list(config.batching.preferred_batch_sizes),
            queue_capacity=config.queue.capacity,
            priority_levels=config.queue.priority_levels,
            instance_count=config.instances.count,
        )
    except ValueError as exc:
        raise ModelError(f"model `{name}`: {exc}") from exc


def _read_tensors(name: str, path: Path) -> list[_Tensor]:
    """The graph's inputs (initializers excepted) and outputs, batch dimension included."""
    if not path.is_file():
        raise ModelError(f"model `{name}`: no `{MODEL_FILE}` in `{path.parent}`")
    try:
        # Only the graph's declarations are needed: external weights stay on disk.
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        # protobuf's DecodeError and onnx's own errors share no useful base.
        raise ModelError(f"model `{name}`: `{path}` is not a readable ONNX model: {exc}") from exc

    graph = model.graph
    if any(not _has_shape(v) for v in graph.output):
        # Some exporters leave output shapes out; inference usually recovers them.
        try:
            graph = onnx.shape_inference.infer_shapes(model).graph
        except Exception as exc:
            logger.debug("model %s: shape inference failed: %s", name, exc)

    weights = {init.name for init in graph.initializer}
    return [
        *(_tensor(name, "input", v) for v in graph.input if v.name not in weights),
        *(_tensor(name, "output", v) for v in graph.output),
    ]


def _has_shape(value: onnx.ValueInfoProto) -> bool:
    kind = value.type.WhichOneof("value")
    return kind == "tensor_type" and bool(value.type.tensor_type.HasField("shape"))


def _tensor(model: str, kind: str, value: onnx.ValueInfoProto) -> _Tensor:
    if value.type.WhichOneof("value") != "tensor_type":
        raise ModelError(
            f"model `{model}`: {kind} `{value.name}` is a"
            f" `{value.type.WhichOneof('value')}`; tidal serves tensors only"
        )
    tensor_type = value.type.tensor_type
    datatype = ONNX_TO_KSERVE.get(tensor_type.elem_type)
    if datatype is None:
        onnx_name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        raise ModelError(
            f"model `{model}`: {kind} `{value.name}` has element type `{onnx_name}`,"
            " which has no KServe datatype"
        )
    if not tensor_type.HasField("shape"):
        raise ModelError(
            f"model `{model}`: {kind} `{value.name}` has no declared shape; export the"
            " model with shapes, or run `onnx.shape_inference` on it"
        )
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    return _Tensor(kind, value.name, datatype, dims)


def _first_unbatchable(tensors: list[_Tensor]) -> str | None:
    """Why the model cannot take a batch dimension first, or None if it can."""
    for t in tensors:
        if not t.dims:
            return f"{t.kind} `{t.name}` is a scalar"
        if t.dims[0] != -1:
            return f"{t.kind} `{t.name}` has a fixed first dimension `{t.dims[0]}`"
    return None


class _Status(NamedTuple):
    version: str
    state: str
    reason: str


class RepositoryManager:
    """Loads models from a repository into a server, and out again.

    Implements the `tidal._core.RepositoryHooks` protocol: the server calls
    `index`, `load` and `unload` for the repository RPCs, from its own
    threads, so every method here is thread-safe.

    Args:
        server: the server the models are served by.
        repository: where the models come from.
    """

    def __init__(self, server: _core.Server, repository: ModelRepository) -> None:
        self.server = server
        self.repository = repository
        # Loads and unloads run one at a time: two loads of one model racing
        # could leave the older one serving. `index` must not wait for a
        # slow load, so the status table has a lock of its own.
        self._load_lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._status: dict[str, _Status] = {}

    def _set_status(self, name: str, status: _Status) -> None:
        with self._status_lock:
            self._status[name] = status

    def load(self, name: str) -> None:
        """Load model `name`, or reload it, and serve it.

        A reload replaces the served model only once the new one is ready;
        if it fails, the old one keeps serving.

        Args:
            name: the model's folder name.

        Raises:
            ModelNotFoundError: there is no such folder (a `KeyError`).
            ConfigError: its `tidal.toml` is invalid.
            ModelError: the model cannot be served as configured.
        """
        with self._load_lock:
            self.repository.path(name)
            version = self._version_of(name)
            with self._status_lock:
                previous = self._status.get(name)
                self._status[name] = _Status(version, LOADING, "")
            try:
                config, signature = self.repository.describe(name)
                spec = _model_spec(name, config, signature)
                executors = [self._executor(name, config) for _ in range(config.instances.count)]
                self.server.add_model(spec, executors)
            except Exception as exc:
                if previous is not None and name in self.server.model_names():
                    self._set_status(
                        name, _Status(previous.version, READY, f"reload failed: {exc}")
                    )
                else:
                    self._set_status(name, _Status(version, UNAVAILABLE, str(exc)))
                raise
            self._set_status(name, _Status(config.version, READY, ""))
        logger.info(
            "model %s version %s: serving, %d instance(s) on %s",
            name,
            config.version,
            config.instances.count,
            executors[0].providers[0],
        )

    def _executor(self, name: str, config: ModelConfig) -> OrtExecutor:
        executor = OrtExecutor(
            self.repository.path(name) / MODEL_FILE,
            intra_op_threads=config.instances.intra_op_threads,
            providers=config.instances.providers,
        )
        try:
            executor.warmup()
        except Exception as exc:
            # A model may legitimately reject all-zero inputs; real requests decide.
            logger.warning("model %s: warm-up on zeros failed, serving anyway: %s", name, exc)
        return executor

    def unload(self, name: str) -> None:
        """Stop serving model `name`; requests it already admitted are still answered.

        Unloading a model that is not being served does nothing.

        Args:
            name: the model's name.

        Raises:
            ModelNotFoundError: no such model in the repository or the server
                (a `KeyError`).
        """
        with self._load_lock:
            if name not in self.server.model_names():
                self.repository.path(name)
                return
            self.server.remove_model(name)
            with self._status_lock:
                version = self._status[name].version if name in self._status else ""
                self._status[name] = _Status(version, UNAVAILABLE, "unloaded")
        logger.info("model %s: unloaded", name)

    def index(self) -> list[tuple[str, str, str, str]]:
        """Every model in the repository or being served, sorted by name.

        Returns:
            Rows of (name, version, state, reason): state is `READY`,
            `LOADING` or `UNAVAILABLE`; reason says why a model is not ready.
        """
        with self._status_lock:
            status = dict(self._status)
        names = set(self.repository.names()) | status.keys()
        rows = []
        for name in sorted(names):
            s = status.get(name)
            if s is None:
                s = _Status(self._version_of(name), UNAVAILABLE, "not loaded")
            rows.append((name, s.version, s.state, s.reason))
        return rows

    def load_all(self) -> list[str]:
        """Load every model in the repository.

        A model that fails to load is logged and left `UNAVAILABLE`, with
        the reason in `index`; the others are served regardless.

        Returns:
            The names of the models now being served.
        """
        loaded = []
        for name in self.repository.names():
            try:
                self.load(name)
            except Exception as exc:
                # Our own errors carry the whole story; anything else is a bug
                # somewhere, and its traceback is what finds it.
                logger.error(
                    "model %s: not loaded: %s",
                    name,
                    exc,
                    exc_info=not isinstance(exc, TidalError),
                )
            else:
                loaded.append(name)
        return loaded

    def _version_of(self, name: str) -> str:
        """The version `tidal.toml` declares, or "" when it cannot be read."""
        config_file = self.repository.root / name / CONFIG_FILE
        if not config_file.is_file():
            return ModelConfig().version
        try:
            return ModelConfig.from_toml(config_file).version
        except (OSError, TidalError):
            return ""
