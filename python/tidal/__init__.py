"""tidal: an SLO-aware inference server for ONNX models.

tidal serves the models of a repository (one folder per model: a
`model.onnx` and an optional `tidal.toml`) over the KServe v2 gRPC
protocol, batching requests so that each is answered within its model's
latency objective. The server itself runs in the Rust extension
`tidal._core`; this package configures it, loads the models and runs them
on ONNX Runtime.

Start it with `tidal serve REPO`, or `tidal serve` for the example models.
"""

from importlib.metadata import PackageNotFoundError, version

from .config import ModelConfig
from .errors import ConfigError, ModelError, ModelNotFoundError, TidalError
from .repository import ModelRepository
from .zoo import write_zoo

try:
    __version__ = version("tidal")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ConfigError",
    "ModelConfig",
    "ModelError",
    "ModelNotFoundError",
    "ModelRepository",
    "TidalError",
    "__version__",
    "write_zoo",
]
