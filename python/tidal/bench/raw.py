"""The ceiling: a model run in-process by ONNX Runtime, no server in between.

`tidal bench --raw MODEL` calls the same executor a tidal worker calls
(`tidal.runtime.OrtExecutor`, with the model's `tidal.toml` settings) back
to back at each batch size and reports rows per second and the latency of
one call. No server can serve a model faster than this on the same cores;
server reports give their throughput as a fraction of it.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig
from ..repository import MODEL_FILE, ModelRepository
from ..runtime import OrtExecutor
from .stats import StepResult, histogram
from .workload import TensorInfo, load_input_file, random_tensor

__all__ = ["RawModel", "best_rows_per_s", "measure_raw", "resolve_model"]

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class RawModel:
    """A model to run in-process: its file, name and configuration."""

    path: Path
    name: str
    config: ModelConfig
    inputs: tuple[TensorInfo, ...]
    """Without the batch dimension when the model batches."""
    outputs: tuple[str, ...]


def resolve_model(spec: str, model: str | None = None, *, scratch: Path | None = None) -> RawModel:
    """Find the model `spec` names: a model repository (with `model`), a
    model folder, an `.onnx` file, or the name of an example model.

    Args:
        spec: what the user gave.
        model: the model's folder name when `spec` is a repository.
        scratch: where example models are written (a temporary folder if None).

    Raises:
        FileNotFoundError: `spec` names nothing of the above.
        tidal.errors.TidalError: the model or its `tidal.toml` is invalid.
    """
    path = Path(spec)
    if path.is_file() and path.suffix == ".onnx":
        if path.name == MODEL_FILE:
            return _describe(path.parent.parent, path.parent.name)
        # A bare file becomes a one-model repository, with default settings.
        root = Path(tempfile.mkdtemp(prefix="tidal-raw-")) if scratch is None else scratch
        (root / path.stem).mkdir(parents=True, exist_ok=True)
        link = root / path.stem / MODEL_FILE
        if not link.exists():
            link.symlink_to(path.resolve())
        return _describe(root, path.stem)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return _describe(path.parent, path.name)
        if model is None:
            raise FileNotFoundError(f"`{spec}` is a model repository; name the model with --model")
        return _describe(path, model)
    from ..zoo import ZOO, write_zoo

    if spec in ZOO:
        root = Path(tempfile.mkdtemp(prefix="tidal-zoo-")) if scratch is None else scratch
        write_zoo(root)
        return _describe(root, spec)
    raise FileNotFoundError(
        f"`{spec}` is neither an .onnx file, a model folder, a model repository"
        f" nor an example model ({', '.join(sorted(ZOO))})"
    )


def _describe(root: Path, name: str) -> RawModel:
    config, signature = ModelRepository(root).describe(name)
    inputs = tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in signature.inputs)
    outputs = tuple(t.name for t in signature.outputs)
    return RawModel(root / name / MODEL_FILE, name, config, inputs, outputs)


def measure_raw(
    model: RawModel,
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    duration_s: float = 2.0,
    warmup_s: float = 0.5,
    int_range: tuple[int, int] = (0, 99),
    input_file: Path | None = None,
    slo_ms: float | None = None,
    seed: int = 0,
    on_step: Any = None,
) -> list[StepResult]:
    """Run `model` back to back at each batch size (up to its `max_batch_size`).

    Args:
        model: from `resolve_model`.
        batch_sizes: rows per call; a model that does not batch runs at 1.
        duration_s: measured seconds per batch size.
        warmup_s: unrecorded seconds before each.
        int_range: inclusive range of random integer inputs.
        input_file: .npy/.npz of real inputs instead of random ones.
        slo_ms: for goodput: rows of calls that took at most this long.
        seed: seeds the random inputs.
        on_step: called with each StepResult as it is measured.

    Returns:
        One step per batch size, `mode == "raw"`: throughput in rows per
        second, latencies of one call.
    """
    config = model.config
    executor = OrtExecutor(
        model.path,
        intra_op_threads=config.instances.intra_op_threads,
        providers=config.instances.providers,
    )
    batches = config.max_batch_size > 0
    sizes = sorted({b for b in batch_sizes if b <= config.max_batch_size}) if batches else [1]
    if not sizes:
        sizes = [config.max_batch_size]
    rng = np.random.default_rng(seed)
    file_arrays = None
    if input_file is not None:
        shaped = tuple(
            TensorInfo(t.name, t.datatype, ((-1,) if batches else ()) + t.shape)
            for t in model.inputs
        )
        file_arrays = load_input_file(input_file, shaped)
    outputs = list(model.outputs)
    steps = []
    for size in sizes:
        feeds = {}
        for t in model.inputs:
            shape = ((size,) if batches else ()) + tuple(max(d, 1) for d in t.shape)
            if file_arrays is not None:
                rows = file_arrays[t.name]
                index = np.arange(size) % rows.shape[0]
                feeds[t.name] = rows[index] if batches else rows
            else:
                feeds[t.name] = random_tensor(rng, t.datatype, shape, int_range)
        latencies = _time_calls(executor, feeds, outputs, duration_s, warmup_s)
        step = _raw_step(model.name, size, latencies, duration_s, slo_ms)
        steps.append(step)
        if on_step is not None:
            on_step(step)
    return steps


def _time_calls(
    executor: OrtExecutor,
    feeds: dict[str, Any],
    outputs: list[str],
    duration_s: float,
    warmup_s: float,
) -> np.ndarray:
    """Latencies (ms) of back-to-back calls over `duration_s`, after `warmup_s`."""
    clock = time.perf_counter_ns
    end_warmup = clock() + int(warmup_s * 1e9)
    while clock() < end_warmup:
        executor(feeds, outputs)
    times = []
    end = clock() + int(duration_s * 1e9)
    while True:
        start = clock()
        if start >= end:
            break
        executor(feeds, outputs)
        times.append(clock() - start)
    return np.asarray(times, dtype=np.float64) / 1e6


def _raw_step(
    name: str, size: int, latencies: np.ndarray, window_s: float, slo_ms: float | None
) -> StepResult:
    calls = latencies.size
    # The window is the time the calls took, not the wall clock: the loop
    # overhead between calls is the caller's, not the model's.
    busy_s = float(latencies.sum()) / 1e3 if calls else window_s
    within = latencies if slo_ms is None else latencies[latencies <= slo_ms]

    def pct(q: float) -> float:
        return float(np.percentile(latencies, q)) if calls else float("nan")

    return StepResult(
        label=f"{name} in-process",
        mode="raw",
        offered_rate=None,
        concurrency=1,
        throughput=calls * size / busy_s,
        goodput=within.size * size / busy_s,
        p50_ms=pct(50),
        p90_ms=pct(90),
        p99_ms=pct(99),
        p999_ms=pct(99.9),
        max_ms=float(latencies.max()) if calls else float("nan"),
        mean_ms=float(latencies.mean()) if calls else float("nan"),
        errors={},
        send_lag_p99_ms=None,
        mean_batch_size=float(size),
        achieved_rate=calls / busy_s,
        intended_rate=calls / busy_s,
        answered=calls,
        sent=calls,
        window_s=busy_s,
        slo_ms=slo_ms,
        model=name,
        rows_per_request=size,
        histogram=histogram(latencies),
    )


def best_rows_per_s(steps: Sequence[StepResult], max_batch_size: int | None = None) -> float | None:
    """The ceiling: the best rows per second among raw steps, at batch sizes
    up to `max_batch_size` (all when None)."""
    rates = [
        s.throughput
        for s in steps
        if s.mode == "raw"
        and (max_batch_size is None or s.rows_per_request <= max(max_batch_size, 1))
    ]
    return max(rates) if rates else None


def load_raw_results(path: Path) -> list[StepResult]:
    """The raw steps of a `results.json` written by `tidal bench --raw`.

    Raises:
        ValueError: the file holds no in-process steps.
        OSError: it cannot be read.
    """
    data = json.loads(path.read_text())
    steps = []
    for entry in data.get("steps", []):
        if entry.get("mode") != "raw":
            continue
        fields = {k: v for k, v in entry.items() if k in StepResult.__dataclass_fields__}
        fields["classes"] = []
        steps.append(StepResult(**fields))
    if not steps:
        raise ValueError(f"`{path}` holds no in-process (--raw) steps")
    return steps
