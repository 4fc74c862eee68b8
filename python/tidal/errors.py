"""Exceptions raised by tidal's Python layer.

Every exception tidal defines derives from `TidalError`, so callers can catch
the whole family in one clause; those that also mean something more general
(a bad value, a missing key) derive from the matching builtin as well.

```
Exception
├── TidalError                      base of everything below
│   ├── ConfigError (ValueError)     a `tidal.toml` is invalid: unknown key,
│   │                                wrong type, value out of range
│   ├── ModelError                   a model folder cannot be served: no
│   │                                `model.onnx`, unsupported signature
│   └── ModelNotFoundError (KeyError)  no folder of that name in the repository
│
│   raised by the extension `tidal._core`, not defined here:
├── ValueError                       a `ModelSpec` field is out of range
├── KeyError                         a model that is not being served
└── OSError                          the gRPC address cannot be bound
```

Messages name the offending value in backticks and, where it helps, say what
to do about it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "ModelError", "ModelNotFoundError", "TidalError"]


class TidalError(Exception):
    """Base class of every exception tidal defines."""


class ConfigError(TidalError, ValueError):
    """A model's `tidal.toml` is invalid.

    The message starts with the file (or another description of where the
    configuration came from) and names the offending key and value.
    """


class ModelError(TidalError):
    """A model folder exists but cannot be served as it is."""


class ModelNotFoundError(TidalError, KeyError):
    """No model of that name exists in the repository."""

    def __str__(self) -> str:
        # KeyError.__str__ shows repr(message), quoting it a second time.
        return str(self.args[0]) if self.args else ""
