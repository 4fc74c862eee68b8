"""Per-model configuration: the `tidal.toml` beside each `model.onnx`.

Every key is optional and has a default that serves well, so a folder with
only a `model.onnx` is a valid model. The keys and their meanings are a
contract that users, tests and benchmarks rely on:

```toml
max_batch_size = 64            # 0 = the model does not batch
version = "1"

[batching]
policy = "adaptive"            # or "static" (Triton dynamic-batcher semantics)
slo_ms = 50.0                  # the P99 objective; request deadlines can only tighten it
max_queue_delay_us = 0         # static only
preferred_batch_sizes = []     # static only

[queue]
capacity = 4096                # admitted requests waiting, all priorities together
priority_levels = 2            # 1 = online (highest), 2 = batch

[instances]
count = 1                      # workers, each with its own ONNX Runtime session
intra_op_threads = 1           # 0 = ONNX Runtime's default (one per core)
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]   # first available wins

[cache]
enabled = false
```

Unknown keys and wrong types are errors rather than warnings: a misspelt key
that silently falls back to its default is the hardest kind of bug to find.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from .errors import ConfigError

__all__ = [
    "BatchingConfig",
    "CacheConfig",
    "InstancesConfig",
    "ModelConfig",
    "Policy",
    "QueueConfig",
]

Policy = Literal["adaptive", "static"]
"""Batch scheduling policy: `static` has Triton dynamic-batcher semantics."""

_POLICIES: tuple[str, ...] = get_args(Policy)

DEFAULT_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class BatchingConfig:
    """The `[batching]` table.

    Attributes:
        policy: `"static"` (Triton dynamic-batcher semantics) or `"adaptive"`.
        slo_ms: the P99 latency objective in milliseconds.
        max_queue_delay_us: static policy: longest wait for a fuller batch.
        preferred_batch_sizes: static policy: sizes dispatched as soon as
            they are reached, ascending.
    """

    policy: Policy = "adaptive"
    slo_ms: float = 50.0
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class QueueConfig:
    """The `[queue]` table.

    Attributes:
        capacity: admitted requests waiting, all priorities together.
        priority_levels: number of priorities; 1 is the highest.
    """

    capacity: int = 4096
    priority_levels: int = 2


@dataclass(frozen=True)
class InstancesConfig:
    """The `[instances]` table.

    Attributes:
        count: worker threads, each with its own ONNX Runtime session.
        intra_op_threads: ONNX Runtime intra-op threads per session; 0 lets
            ONNX Runtime pick (one per core).
        providers: execution providers in order of preference; the first
            available one wins, and the CPU provider is always the fallback.
    """

    count: int = 1
    intra_op_threads: int = 1
    providers: tuple[str, ...] = DEFAULT_PROVIDERS


@dataclass(frozen=True)
class CacheConfig:
    """The `[cache]` table.

    Attributes:
        enabled: answer repeated identical requests from a response cache.
    """

    enabled: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Everything `tidal.toml` configures for one model.

    Attributes:
        max_batch_size: largest batch the model is run with; 0 means the
            model does not batch (its inputs have no batch dimension).
        version: the version reported to clients.
        batching: the `[batching]` table.
        queue: the `[queue]` table.
        instances: the `[instances]` table.
        cache: the `[cache]` table.
        explicit_keys: dotted names of the keys the file set (the others
            have their defaults); lets the repository tell a deliberate
            `max_batch_size = 64` from the default.
    """

    max_batch_size: int = 64
    version: str = "1"
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    instances: InstancesConfig = field(default_factory=InstancesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    explicit_keys: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def from_toml(cls, path: Path) -> ModelConfig:
        """Read a `tidal.toml`.

        Args:
            path: the file to read.

        Returns:
            The configuration, with defaults for every key the file omits.

        Raises:
            ConfigError: the file is not valid TOML, has an unknown key, a
                value of the wrong type or out of range.
            OSError: the file cannot be read.
        """
        with path.open("rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> ModelConfig:
        """Build a configuration from parsed TOML.

        Args:
            data: the top-level table, as `tomllib` returns it.
            source: where `data` came from; starts every error message.

        Returns:
            The configuration, with defaults for every key `data` omits.

        Raises:
            ConfigError: an unknown key, a value of the wrong type or out of range.
        """
        r = _Reader(source)
        top = r.table(data, "", {"max_batch_size", "version", *_SECTIONS})

        max_batch_size = r.integer(top, "max_batch_size", 64, minimum=0)
        version = r.version(top, "version", "1")

        b = r.table(top.get("batching", {}), "batching", _BATCHING_KEYS)
        policy = r.choice(b, "batching.policy", "adaptive", _POLICIES)
        slo_ms = r.positive_number(b, "batching.slo_ms", 50.0)
        max_queue_delay_us = r.integer(b, "batching.max_queue_delay_us", 0, minimum=0)
        preferred = r.batch_sizes(b, "batching.preferred_batch_sizes", max_batch_size)

        q = r.table(top.get("queue", {}), "queue", {"capacity", "priority_levels"})
        capacity = r.integer(q, "queue.capacity", 4096, minimum=1)
        priority_levels = r.integer(q, "queue.priority_levels", 2, minimum=1)

        i = r.table(
            top.get("instances", {}), "instances", {"count", "intra_op_threads", "providers"}
        )
        count = r.integer(i, "instances.count", 1, minimum=1)
        intra_op_threads = r.integer(i, "instances.intra_op_threads", 1, minimum=0)
        providers = r.strings(i, "instances.providers", DEFAULT_PROVIDERS)

        c = r.table(top.get("cache", {}), "cache", {"enabled"})
        enabled = r.boolean(c, "cache.enabled", False)

        return cls(
            max_batch_size=max_batch_size,
            version=version,
            batching=BatchingConfig(
                policy=cast(Policy, policy),
                slo_ms=slo_ms,
                max_queue_delay_us=max_queue_delay_us,
                preferred_batch_sizes=preferred,
            ),
            queue=QueueConfig(capacity=capacity, priority_levels=priority_levels),
            instances=InstancesConfig(
                count=count, intra_op_threads=intra_op_threads, providers=providers
            ),
            cache=CacheConfig(enabled=enabled),
            explicit_keys=frozenset(r.seen),
        )


_SECTIONS = ("batching", "queue", "instances", "cache")
_BATCHING_KEYS = {"policy", "slo_ms", "max_queue_delay_us", "preferred_batch_sizes"}


def _show(value: object) -> str:
    """Render a TOML value the way the user wrote it (`true`, `"text"`, `[1, 2]`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # `nan`, `inf`, `-inf`, as TOML spells them
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        # Dates and times: TOML has them, JSON does not.
        return str(value)


class _Reader:
    """Typed look-ups in parsed TOML that raise `ConfigError` naming file and key."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.seen: set[str] = set()

    def error(self, key: str, expected: str, value: object) -> ConfigError:
        return ConfigError(f"{self.source}: `{key}` must be {expected}, got `{_show(value)}`")

    def table(self, value: object, key: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(key, "a table", value)
        for name in value:
            if name not in allowed:
                dotted = f"{key}.{name}" if key else name
                message = f"{self.source}: unknown key `{dotted}`"
                close = difflib.get_close_matches(name, sorted(allowed), n=1)
                if close:
                    message += f"; did you mean `{close[0]}`?"
                else:
                    where = f"in `[{key}]`" if key else "at the top level"
                    listed = ", ".join(f"`{a}`" for a in sorted(allowed))
                    message += f"; expected {where} one of {listed}"
                raise ConfigError(message)
        return value

    def _get(self, table: Mapping[str, Any], key: str) -> tuple[bool, object]:
        name = key.rpartition(".")[2]
        if name not in table:
            return False, None
        self.seen.add(key)
        return True, table[name]

    def integer(self, table: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int:
        present, value = self._get(table, key)
        if not present:
            return default
        # bool is an int subclass; `count = true` is a mistake, not 1.
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            expected = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
            raise self.error(key, expected, value)
        return value

    def positive_number(self, table: Mapping[str, Any], key: str, default: float) -> float:
        present, value = self._get(table, key)
        if not present:
            return default
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise self.error(key, "a positive number", value)
        return float(value)

    def boolean(self, table: Mapping[str, Any], key: str, default: bool) -> bool:
        present, value = self._get(table, key)
        if not present:
            return default
        if not isinstance(value, bool):
            raise self.error(key, "`true` or `false`", value)
        return value

    def choice(
        self, table: Mapping[str, Any], key: str, default: str, choices: tuple[str, ...]
    ) -> str:
        present, value = self._get(table, key)
        if not present:
            return default
        if value not in choices:
            listed = " or ".join(f'`"{c}"`' for c in choices)
            raise self.error(key, listed, value)
        return value

    def version(self, table: Mapping[str, Any], key: str, default: str) -> str:
        present, value = self._get(table, key)
        if not present:
            return default
        # Triton numbers its versions, so `version = 2` is accepted as "2".
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return str(value)
        if not isinstance(value, str) or not value or value != value.strip():
            raise self.error(key, 'a non-empty string such as `"1"`', value)
        return value

    def strings(
        self, table: Mapping[str, Any], key: str, default: tuple[str, ...]
    ) -> tuple[str, ...]:
        present, value = self._get(table, key)
        if not present:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "a list of names", value)
        return tuple(value)

    def batch_sizes(
        self, table: Mapping[str, Any], key: str, max_batch_size: int
    ) -> tuple[int, ...]:
        present, value = self._get(table, key)
        if not present:
            return ()
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise self.error(key, "a list of integers", value)
        for size in value:
            if not 1 <= size <= max_batch_size:
                if max_batch_size == 0:
                    raise ConfigError(
                        f"{self.source}: `{key}` must be empty when `max_batch_size = 0`,"
                        f" got `{_show(value)}`"
                    )
                raise ConfigError(
                    f"{self.source}: `{key}` must hold sizes from 1 to"
                    f" `max_batch_size` ({max_batch_size}), got `{size}`"
                )
        if len(set(value)) != len(value):
            raise self.error(key, "a list without repeats", value)
        return tuple(sorted(value))
