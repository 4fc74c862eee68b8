"""`tidal.toml`: defaults, every key, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from tidal.config import DEFAULT_PROVIDERS, ModelConfig
from tidal.errors import ConfigError, TidalError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mymodel" / "tidal.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = ModelConfig.from_toml(_write(tmp_path, ""))
    assert config == ModelConfig()
    assert config.max_batch_size == 64
    assert config.version == "1"
    assert config.batching.policy == "adaptive"
    assert config.batching.slo_ms == 50.0
    assert config.batching.max_queue_delay_us == 0
    assert config.batching.preferred_batch_sizes == ()
    assert config.queue.capacity == 4096
    assert config.queue.priority_levels == 2
    assert config.instances.count == 1
    assert config.instances.intra_op_threads == 1
    assert config.instances.providers == DEFAULT_PROVIDERS
    assert config.cache.enabled is False
    assert config.explicit_keys == frozenset()


def test_every_key(tmp_path: Path) -> None:
    text = """
max_batch_size = 32
version = 3

[batching]
policy = "adaptive"
slo_ms = 7.5
max_queue_delay_us = 250
preferred_batch_sizes = [16, 4, 8]

[queue]
capacity = 100
priority_levels = 3

[instances]
count = 2
intra_op_threads = 0
providers = ["CPUExecutionProvider"]

[cache]
enabled = true
"""
    config = ModelConfig.from_toml(_write(tmp_path, text))
    assert config.max_batch_size == 32
    assert config.version == "3"  # Triton numbers versions: an integer is accepted
    assert config.batching.policy == "adaptive"
    assert config.batching.slo_ms == 7.5
    assert config.batching.max_queue_delay_us == 250
    assert config.batching.preferred_batch_sizes == (4, 8, 16)
    assert config.queue.capacity == 100
    assert config.queue.priority_levels == 3
    assert config.instances.count == 2
    assert config.instances.intra_op_threads == 0
    assert config.instances.providers == ("CPUExecutionProvider",)
    assert config.cache.enabled is True
    assert config.explicit_keys == {
        "max_batch_size",
        "version",
        "batching.policy",
        "batching.slo_ms",
        "batching.max_queue_delay_us",
        "batching.preferred_batch_sizes",
        "queue.capacity",
        "queue.priority_levels",
        "instances.count",
        "instances.intra_op_threads",
        "instances.providers",
        "cache.enabled",
    }


def test_partial_tables_keep_the_other_defaults(tmp_path: Path) -> None:
    config = ModelConfig.from_toml(_write(tmp_path, "[queue]\ncapacity = 5\n"))
    assert config.queue.capacity == 5
    assert config.queue.priority_levels == 2
    assert config.max_batch_size == 64
    assert config.explicit_keys == frozenset({"queue.capacity"})


def test_from_dict_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^somewhere: `queue.capacity`"):
        ModelConfig.from_dict({"queue": {"capacity": 0}}, source="somewhere")
    with pytest.raises(ConfigError, match=r"^<dict>: unknown key `colour`"):
        ModelConfig.from_dict({"colour": "blue"})


# (tidal.toml, the key the message must name, more words it must contain)
INVALID = {
    "misspelt top-level key": ("max_batch_sise = 8", "`max_batch_sise`", ["`max_batch_size`"]),
    "unknown key in a table": ("[queue]\nsize = 3", "`queue.size`", ["`capacity`"]),
    "unknown table": ("[scheduler]\nx = 1", "`scheduler`", ["unknown key"]),
    "table is not a table": ("batching = 3", "`batching`", ["a table"]),
    "negative max_batch_size": ("max_batch_size = -1", "`max_batch_size`", ["`-1`"]),
    "boolean max_batch_size": ("max_batch_size = true", "`max_batch_size`", ["`true`"]),
    "string max_batch_size": ('max_batch_size = "8"', "`max_batch_size`", ['`"8"`']),
    "empty version": ('version = ""', "`version`", ["non-empty"]),
    "zero version": ("version = 0", "`version`", ["`0`"]),
    "unknown policy": ('[batching]\npolicy = "dynamic"', "`batching.policy`", ['"adaptive"']),
    "zero slo": ("[batching]\nslo_ms = 0", "`batching.slo_ms`", ["positive"]),
    "infinite slo": ("[batching]\nslo_ms = inf", "`batching.slo_ms`", ["`inf`"]),
    "negative delay": (
        "[batching]\nmax_queue_delay_us = -5",
        "`batching.max_queue_delay_us`",
        ["`-5`"],
    ),
    "preferred size over max": (
        "max_batch_size = 8\n[batching]\npreferred_batch_sizes = [4, 16]",
        "`batching.preferred_batch_sizes`",
        ["`16`", "(8)"],
    ),
    "preferred size zero": (
        "[batching]\npreferred_batch_sizes = [0]",
        "`batching.preferred_batch_sizes`",
        ["`0`"],
    ),
    "preferred sizes repeat": (
        "[batching]\npreferred_batch_sizes = [4, 4]",
        "`batching.preferred_batch_sizes`",
        ["repeats"],
    ),
    "preferred sizes not integers": (
        '[batching]\npreferred_batch_sizes = ["4"]',
        "`batching.preferred_batch_sizes`",
        ["integers"],
    ),
    "preferred sizes without batching": (
        "max_batch_size = 0\n[batching]\npreferred_batch_sizes = [1]",
        "`batching.preferred_batch_sizes`",
        ["max_batch_size = 0"],
    ),
    "zero capacity": ("[queue]\ncapacity = 0", "`queue.capacity`", [">= 1"]),
    "zero priority levels": ("[queue]\npriority_levels = 0", "`queue.priority_levels`", [">= 1"]),
    "zero instances": ("[instances]\ncount = 0", "`instances.count`", [">= 1"]),
    "negative threads": (
        "[instances]\nintra_op_threads = -1",
        "`instances.intra_op_threads`",
        ["non-negative"],
    ),
    "providers not a list": (
        '[instances]\nproviders = "CPUExecutionProvider"',
        "`instances.providers`",
        ["a list of names"],
    ),
    "empty provider name": ('[instances]\nproviders = [""]', "`instances.providers`", ["names"]),
    "cache not a boolean": ('[cache]\nenabled = "yes"', "`cache.enabled`", ['`"yes"`']),
    "invalid TOML": ("max_batch_size = ", "invalid TOML", []),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_configuration_names_file_and_key(tmp_path: Path, case: str) -> None:
    text, key, words = INVALID[case]
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_toml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert key in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    # One family of exceptions, and a ValueError for generic callers.
    assert isinstance(info.value, TidalError)
    assert isinstance(info.value, ValueError)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ModelConfig.from_toml(tmp_path / "tidal.toml")
