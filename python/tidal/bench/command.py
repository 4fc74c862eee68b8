"""`tidal bench TARGET --model NAME ...`: run the steps, print, write JSON and a plot.

Modes:
- `closed`: one step per `--concurrency` level, that many calls in flight.
- `open`: one step per `--rate`, arrivals on a schedule (Poisson by default;
  `--arrivals uniform`, `--burst` on/off phases or a `--trace` of times).
- `sweep`: open-loop steps chosen by bisection to find the knee, the highest
  rate whose P99 stays within `--slo-ms`.
- `raw`: the model in-process, ONNX Runtime alone, at each batch size
  (`--raw MODEL` for short): the ceiling.

`--compare TARGET2` measures a second server (or `--compare-model`, a second
model configuration) interleaved with the first, step by step, with the same
arrival schedule, so their ratio is fair on a noisy machine.
`--self-test` measures the load generator against a server that answers at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from rich.console import Console

from .. import __version__
from .plot import plot_steps
from .progress import StepProgress
from .raw import best_rows_per_s, load_raw_results, measure_raw, resolve_model
from .report import (
    print_classes,
    print_comparison,
    print_generator,
    print_raw,
    print_table,
)
from .runner import LoadSpec, run_step
from .stats import StepResult
from .sweep import KneeSearch, step_passes
from .workload import TrafficClass, Workload, make_workload

__all__ = ["add_arguments", "run"]


def _numbers(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"`{text}` is not a comma-separated list of positive numbers"
        )
    return values


def _integers(text: str) -> list[int]:
    values = _numbers(text)
    if any(v != int(v) for v in values):
        raise argparse.ArgumentTypeError(f"`{text}` is not a comma-separated list of integers")
    return [int(v) for v in values]


def _int_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not LOW,HIGH (two integers)") from None
    if low > high:
        raise argparse.ArgumentTypeError(f"`{text}`: LOW must not exceed HIGH")
    return low, high


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"`{text}` is not a fraction within 0 and 1")
    return value


def _burst(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        values = [float(x) for x in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or values[0] <= 0 or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"`{text}` is not ON_S,OFF_S[,OFF_RATE]: burst seconds, pause seconds"
            " and the rate during pauses (default 0)"
        )
    return values[0], values[1], values[2] if len(values) == 3 else 0.0


def _traffic_class(text: str) -> TrafficClass:
    try:
        return TrafficClass.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the options of `tidal bench`."""
    p.description = (
        "Drive TARGET, any KServe v2 gRPC server, from a Rust load generator: closed loop,"
        " open loop (Poisson, evenly spaced, bursts or a trace), or a sweep that finds the"
        " knee; or run a model in-process (--raw) for the ceiling. Prints tables; with"
        " --out, writes results.json and latency_throughput.png."
    )
    p.add_argument(
        "target",
        metavar="TARGET",
        nargs="?",
        help="host:port of any KServe v2 gRPC server (--mode raw: a model repository,"
        " model folder, .onnx file or example model name)",
    )
    p.add_argument("--model", help="model to drive")
    p.add_argument(
        "--mode",
        choices=("open", "closed", "sweep", "raw"),
        help="closed: N calls in flight; open: arrivals at a rate; sweep: find the knee"
        " by bisection; raw: ONNX Runtime in-process (default: open when a rate, burst or"
        " trace is given, else closed)",
    )
    load = p.add_argument_group("load")
    load.add_argument(
        "--rate",
        "--rates",
        dest="rates",
        type=_numbers,
        metavar="R[,R...]",
        help="requests per second, one step each (open); sweep: a first guess, or a"
        " bracket LOW,HIGH",
    )
    load.add_argument(
        "--concurrency",
        type=_integers,
        metavar="N[,N...]",
        help="calls in flight, one step each (closed; default 1); sweep: the probe"
        " that estimates capacity (default 32)",
    )
    load.add_argument(
        "--duration", type=float, default=10.0, metavar="S", help="seconds per step (%(default)s)"
    )
    load.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        metavar="S",
        help="unrecorded seconds before each step (%(default)s)",
    )
    load.add_argument(
        "--drain",
        type=float,
        default=10.0,
        metavar="S",
        help="after a step, how long to wait for the last answers (%(default)s)",
    )
    load.add_argument(
        "--arrivals",
        choices=("poisson", "uniform"),
        default="poisson",
        help="open loop: Poisson arrivals, or evenly spaced (%(default)s)",
    )
    load.add_argument(
        "--burst",
        type=_burst,
        metavar="ON_S,OFF_S[,OFF_RATE]",
        help="open loop in bursts: Poisson at the rate for ON_S seconds, then at OFF_RATE"
        " (default 0) for OFF_S, repeated",
    )
    load.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="open loop at recorded arrival times (text, one time in seconds per line, or"
        " .npy); with --rate, stretched to each rate",
    )
    load.add_argument("--api", choices=("unary", "stream"), default="unary")
    load.add_argument("--connections", type=int, default=4, help="HTTP/2 connections (%(default)s)")
    load.add_argument("--seed", type=int, default=0)
    data = p.add_argument_group("requests")
    data.add_argument("--batch-size", type=int, default=1, help="rows per request (%(default)s)")
    data.add_argument(
        "--input-file",
        type=Path,
        metavar="FILE",
        help="inputs from an .npz (one array per input name) or .npy (one input)",
    )
    data.add_argument(
        "--int-range",
        type=_int_range,
        default=(0, 99),
        metavar="LOW,HIGH",
        help="range of random integer inputs, inclusive (%(default)s)",
    )
    data.add_argument(
        "--repeat-fraction",
        type=_fraction,
        metavar="F",
        help="send an exact repeat of an earlier input with probability F, else a fresh"
        " input never sent before (exercises caches; default: cycle 64 inputs)",
    )
    data.add_argument(
        "--class",
        dest="classes",
        type=_traffic_class,
        action="append",
        metavar="NAME[:weight=W,priority=P,timeout-ms=T,slo-ms=S]",
        help="a traffic class with its share and request parameters; repeat for mixed"
        " traffic (e.g. online:weight=0.8,priority=1 --class batch:weight=0.2,priority=2)",
    )
    out = p.add_argument_group("results")
    out.add_argument(
        "--slo-ms", type=float, help="latency objective: goodput counts answers within it"
    )
    out.add_argument("--label", default="", help="name of this configuration in tables and plots")
    out.add_argument("--out", type=Path, help="write results.json and latency_throughput.png here")
    out.add_argument(
        "--save-samples",
        action="store_true",
        help="also write every recorded latency to DIR/samples.npz",
    )
    out.add_argument(
        "--check", action="store_true", help="exit with status 1 when any request failed"
    )
    out.add_argument("--no-progress", action="store_true", help="draw no live progress bar")
    cmp = p.add_argument_group("comparison and ceiling")
    cmp.add_argument(
        "--compare",
        metavar="TARGET2",
        help="a second server, measured interleaved with TARGET step by step",
    )
    cmp.add_argument(
        "--compare-model", metavar="NAME", help="the model to drive on the second target"
    )
    cmp.add_argument("--compare-label", default="", help="its name in tables and plots")
    cmp.add_argument(
        "--ceiling",
        metavar="PATH",
        help="show throughput as a fraction of the in-process ceiling: a results.json of"
        " `tidal bench --raw`, or a model to measure first",
    )
    cmp.add_argument(
        "--raw",
        metavar="MODEL",
        help="ONNX Runtime in-process, no server: a model repository (with --model),"
        " model folder, .onnx file or example model name",
    )
    cmp.add_argument(
        "--batch-sizes",
        type=_integers,
        default=[1, 2, 4, 8, 16, 32, 64],
        metavar="B[,B...]",
        help="raw: batch sizes to run (up to the model's max_batch_size)",
    )
    sweep = p.add_argument_group("sweep")
    sweep.add_argument("--sweep-steps", type=int, default=8, help="most steps (%(default)s)")
    sweep.add_argument(
        "--sweep-tolerance",
        type=float,
        default=0.05,
        help="stop when the knee is bracketed this tightly, relative (%(default)s)",
    )
    sweep.add_argument(
        "--max-error-fraction",
        type=_fraction,
        default=0.01,
        help="a step with more failed requests than this fails (%(default)s)",
    )
    gen = p.add_argument_group("load generator")
    gen.add_argument(
        "--self-test",
        action="store_true",
        help="measure the load generator against a server that answers at once"
        " (default rate 20000/s)",
    )
    gen.add_argument(
        "--cpus",
        type=_cpu_list,
        metavar="LIST",
        help="pin the load generator to these CPUs (e.g. 0 or 0-1)",
    )
    gen.add_argument(
        "--echo-cpus",
        type=_cpu_list,
        metavar="LIST",
        help="--self-test: pin the echo server to these CPUs",
    )


def _cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a CPU list such as 0 or 0-1,3") from None
    return cpus


@dataclass
class _Side:
    """One of the (at most two) things measured: a target and a model."""

    label: str
    target: str
    model: str
    workload: Workload
    ceiling: float | None = None


def _details(exc: grpc.RpcError) -> str:
    """What a failed call's status says (a grpc.Call carries code and details)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(exc)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"tidal bench: error: {message}")


def run(args: argparse.Namespace) -> int:
    """Run `tidal bench`; returns the exit status."""
    console = Console(width=max(Console().width, 160))
    if args.cpus:
        os.sched_setaffinity(0, args.cpus)
    if args.self_test:
        return _self_test(args, console)
    if args.raw is not None or args.mode == "raw":
        return _run_raw(args, console)
    if not args.target or not args.model:
        raise _fail("TARGET and --model are needed (or --raw MODEL, or --self-test)")
    return _run_server(args, console)


def _mode(args: argparse.Namespace) -> str:
    if args.mode:
        return str(args.mode)
    return "open" if args.rates or args.burst or args.trace else "closed"


def _trace_times(path: Path) -> list[float]:
    """Arrival times from a text file (the first number on each line; `#`
    starts a comment) or an .npy array."""
    if path.suffix == ".npy":
        return [float(t) for t in np.load(path, allow_pickle=False).ravel()]
    times = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            times.append(float(line.replace(",", " ").split()[0]))
        except ValueError:
            raise _fail(f"`{path}` line {number}: `{line}` is not a time in seconds") from None
    return times


def _levels(args: argparse.Namespace, mode: str) -> list[LoadSpec]:
    if mode == "closed":
        return [LoadSpec(mode="closed", concurrency=c) for c in args.concurrency or [1]]
    if args.trace:
        times = _trace_times(args.trace)
        try:
            if not args.rates:
                return [LoadSpec.trace(times)]
            return [LoadSpec.trace(times, rate) for rate in args.rates]
        except ValueError as exc:
            raise _fail(f"`{args.trace}`: {exc}") from None
    if not args.rates:
        raise _fail("--mode open needs --rate R[,R...] (or --trace FILE)")
    return [_open_level(args, rate) for rate in args.rates]


def _open_level(args: argparse.Namespace, rate: float) -> LoadSpec:
    """An open-loop level at mean rate `rate` (bursts: the rate inside a burst)."""
    if args.burst:
        on_s, off_s, off_rate = args.burst
        return LoadSpec(
            mode="open", arrivals="onoff", rate=rate, on_s=on_s, off_s=off_s, off_rate=off_rate
        )
    return LoadSpec(mode="open", arrivals=args.arrivals, rate=rate)


def _sides(args: argparse.Namespace) -> list[_Side]:
    classes = tuple(args.classes or [TrafficClass()])
    specs = [(args.target, args.model, args.label)]
    if args.compare or args.compare_model:
        specs.append(
            (args.compare or args.target, args.compare_model or args.model, args.compare_label)
        )
    sides = []
    for target, model, label in specs:
        try:
            workload = make_workload(
                target,
                model,
                batch_size=args.batch_size,
                int_range=args.int_range,
                seed=args.seed,
                input_file=args.input_file,
                classes=classes,
                repeat_fraction=args.repeat_fraction,
            )
        except ValueError as exc:
            raise _fail(str(exc)) from None
        except grpc.RpcError as exc:
            raise _fail(f"cannot describe model `{model}` on `{target}`: {_details(exc)}") from None
        sides.append(_Side(label, target, model, workload))
    if len(sides) == 2:
        a, b = sides
        differ_by_model = a.model != b.model
        a.label = a.label or (a.model if differ_by_model else a.target)
        b.label = b.label or (b.model if differ_by_model else b.target)
        if a.label == b.label:
            b.label += " (2)"
    else:
        sides[0].label = sides[0].label or sides[0].model
    return sides


def _run_server(args: argparse.Namespace, console: Console) -> int:
    mode = _mode(args)
    if mode == "sweep" and not args.slo_ms:
        raise _fail("--mode sweep needs --slo-ms: the knee is where P99 crosses it")
    sides = _sides(args)
    raw_steps = _ceiling(args, sides, console)
    progress = StepProgress(console, enabled=not args.no_progress)
    measure = _measurer(args, progress, console)
    steps: list[StepResult] = []
    pairs: list[tuple[StepResult, StepResult]] = []
    knees: dict[str, float | None] = {}
    interrupted = False
    try:
        if mode == "sweep":
            knees = _sweep(args, sides, measure, steps)
        else:
            for i, level in enumerate(_levels(args, mode)):
                # Alternate who goes first, so a drift in the machine's speed
                # favours neither side.
                order = sides if i % 2 == 0 else sides[::-1]
                done = {s.label: measure(s, level, i) for s in order}
                steps += [done[s.label] for s in sides]
                if len(sides) == 2:
                    pairs.append((done[sides[0].label], done[sides[1].label]))
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: reporting the steps measured so far[/yellow]")
    if not steps:
        return 130
    title = f"tidal bench {' vs '.join(s.target for s in sides)} --model {args.model}"
    print_table(steps, title, console)
    print_classes(steps, console)
    print_generator(steps, console)
    if pairs:
        print_comparison(pairs, console)
    if knees:
        for label, knee in knees.items():
            found = f"{knee:,.0f} requests/s" if knee else "not found (no step passed)"
            console.print(f"knee of {label}: {found} (P99 <= {args.slo_ms:g} ms)")
    if args.out:
        _write(args, mode, sides, steps, knees, raw_steps, console)
    if interrupted:
        return 130  # what a shell reports for a command ended by Ctrl-C
    failed = any(s.errors for s in steps)
    return 1 if args.check and failed else 0


def _measurer(
    args: argparse.Namespace, progress: StepProgress, console: Console
) -> Callable[[_Side, LoadSpec, int], StepResult]:
    def measure(side: _Side, level: LoadSpec, index: int) -> StepResult:
        step = run_step(
            side.target,
            side.workload,
            load=level,
            api=args.api,
            duration_s=args.duration,
            warmup_s=args.warmup,
            drain_s=args.drain,
            slo_ms=args.slo_ms,
            connections=args.connections,
            # The same seed for both sides: the same arrival schedule.
            seed=args.seed + index,
            label=side.label,
            progress=progress,
        )
        if side.ceiling:
            step.ceiling = side.ceiling
            step.ceiling_fraction = step.throughput * step.rows_per_request / side.ceiling
        errors = f", errors {step.error_count:,}" if step.errors else ""
        console.print(
            f"  {side.label}: {level.describe()}: {step.throughput:,.0f} answers/s,"
            f" P50 {step.p50_ms:,.2f} ms, P99 {step.p99_ms:,.2f} ms{errors}"
        )
        return step

    return measure


def _sweep(
    args: argparse.Namespace,
    sides: Sequence[_Side],
    measure: Callable[[_Side, LoadSpec, int], StepResult],
    steps: list[StepResult],
) -> dict[str, float | None]:
    searches = {}
    for side in sides:
        first = list(args.rates or [])
        if len(first) >= 2:
            first = [max(first), min(first)]
        if not first:
            probe = LoadSpec(mode="closed", concurrency=(args.concurrency or [32])[-1])
            estimate = measure(side, probe, 0)
            steps.append(estimate)
            if estimate.throughput <= 0:
                raise _fail(f"{side.label}: no answer at all in the probe; is the model served?")
            first = [estimate.throughput]
        searches[side.label] = KneeSearch(
            first, tolerance=args.sweep_tolerance, max_steps=args.sweep_steps
        )
    index = 1
    while True:
        proposed = [(s, searches[s.label].next_rate()) for s in sides]
        pending = [(s, r) for s, r in proposed if r is not None]
        if not pending:
            break
        if index % 2 == 0:
            pending.reverse()
        for side, rate in pending:
            step = measure(side, _open_level(args, rate), index)
            steps.append(step)
            searches[side.label].record(
                rate, step_passes(step, args.slo_ms, args.max_error_fraction)
            )
        index += 1
    return {label: search.passed for label, search in searches.items()}


def _ceiling(
    args: argparse.Namespace, sides: Sequence[_Side], console: Console
) -> list[StepResult]:
    """Reads or measures the in-process ceiling named by --ceiling, and sets
    each side's (at batch sizes up to its server's max_batch_size)."""
    if not args.ceiling:
        return []
    path = Path(args.ceiling)
    try:
        if path.suffix == ".json":
            raw_steps = load_raw_results(path)
        else:
            model = resolve_model(args.ceiling, args.model)
            console.print(f"measuring the in-process ceiling of {model.name} ...")
            raw_steps = measure_raw(
                model,
                batch_sizes=args.batch_sizes,
                duration_s=min(args.duration, 2.0),
                warmup_s=min(args.warmup, 0.5),
                int_range=args.int_range,
                input_file=args.input_file,
                seed=args.seed,
            )
    except (OSError, ValueError) as exc:
        raise _fail(f"--ceiling `{args.ceiling}`: {exc}") from None
    for side in sides:
        side.ceiling = best_rows_per_s(raw_steps, side.workload.max_batch_size)
    return raw_steps


def _run_raw(args: argparse.Namespace, console: Console) -> int:
    spec = args.raw or args.target
    if not spec:
        raise _fail("--mode raw needs a model: TARGET or --raw MODEL")
    try:
        model = resolve_model(spec, args.model)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{model.name}: ONNX Runtime in-process, {args.duration:g} s per batch size"
        f" (max_batch_size {model.config.max_batch_size},"
        f" {model.config.instances.intra_op_threads} intra-op thread(s))"
    )
    steps = measure_raw(
        model,
        batch_sizes=args.batch_sizes,
        duration_s=args.duration,
        warmup_s=args.warmup,
        int_range=args.int_range,
        input_file=args.input_file,
        slo_ms=args.slo_ms,
        seed=args.seed,
        on_step=lambda s: console.print(
            f"  batch {s.rows_per_request}: {s.throughput:,.0f} rows/s, P50 {s.p50_ms:.3f} ms"
        ),
    )
    if args.label:
        for s in steps:
            s.label = args.label
    print_raw(steps, f"{model.name}: ONNX Runtime in-process (the ceiling)", console)
    if args.out:
        _write(args, "raw", [], steps, {}, [], console, model=model.name)
    return 0


_SELF_TEST_MAX_LAG_MS = 5.0
"""The self-test fails a rate whose send lag P99, or receive lag P99,
exceeds this."""


def _self_test(args: argparse.Namespace, console: Console) -> int:
    from .launch import EchoProcess

    rates = args.rates or [20000.0]
    with EchoProcess(cpus=args.echo_cpus) as echo:
        console.print(
            f"self-test: the load generator against a server that answers at once ({echo.target})"
        )
        workload = make_workload(echo.target, "echo", int_range=args.int_range, seed=args.seed)
        progress = StepProgress(console, enabled=not args.no_progress)
        steps = []
        for i, rate in enumerate(rates):
            steps.append(
                run_step(
                    echo.target,
                    workload,
                    load=_open_level(args, rate),
                    api=args.api,
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                    drain_s=args.drain,
                    connections=args.connections,
                    seed=args.seed + i,
                    label="self-test",
                    progress=progress,
                )
            )
    print_table(steps, "self-test: answers from the echo server", console)
    print_generator(steps, console)
    ok = True
    for s in steps:
        ratio = s.achieved_rate / s.intended_rate if s.intended_rate else 0.0
        # Keeping up means sending on time, not only sending everything:
        # a generator that falls behind shows it in its send lag first, and
        # one that cannot keep up with the answers in its receive lag.
        lag = s.send_lag_p99_ms if s.send_lag_p99_ms is not None else math.inf
        back = s.receive_lag_p99_ms if s.receive_lag_p99_ms is not None else math.inf
        passed = (
            ratio >= 0.99
            and lag <= _SELF_TEST_MAX_LAG_MS
            and back <= _SELF_TEST_MAX_LAG_MS
            and not s.errors
        )
        ok &= passed
        console.print(
            f"{'OK  ' if passed else 'FAIL'} {s.intended_rate:,.0f}/s intended,"
            f" {s.achieved_rate:,.0f}/s sent ({ratio:.2%}), send lag P99"
            f" {lag:.3f} ms, receive lag P99 {back:.3f} ms, answers P99 {s.p99_ms:.3f} ms,"
            f" errors {s.error_count:,}"
        )
    if args.out:
        sides = [_Side("self-test", echo.target, "echo", workload)]
        _write(args, "open", sides, steps, {}, [], console)
    return 0 if ok else 1


def _write(
    args: argparse.Namespace,
    mode: str,
    sides: Sequence[_Side],
    steps: Sequence[StepResult],
    knees: dict[str, float | None],
    raw_steps: Sequence[StepResult],
    console: Console,
    *,
    model: str | None = None,
) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ceiling = next((s.ceiling for s in sides if s.ceiling), None)
    results: dict[str, Any] = {
        "tidal_version": __version__,
        "command": " ".join(["tidal", *sys.argv[1:]]) if sys.argv else "tidal bench",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "generator_cpus": sorted(os.sched_getaffinity(0)),
        },
        "mode": mode,
        "model": model or args.model,
        "api": args.api,
        "slo_ms": args.slo_ms,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "targets": [{"label": s.label, "target": s.target, "model": s.model} for s in sides],
        "steps": [s.to_json() for s in steps],
    }
    if knees:
        results["knee"] = knees
    if raw_steps:
        results["ceiling"] = {
            "rows_per_s": {s.label: s.ceiling for s in sides},
            "steps": [s.to_json() for s in raw_steps],
        }
    (out / "results.json").write_text(json.dumps(_finite(results), indent=2, allow_nan=False))
    title = " vs ".join(s.label for s in sides) or (model or "")
    plot_steps(
        [*steps, *raw_steps],
        out / "latency_throughput.png",
        title=f"{title}{' on ' + sides[0].target if len(sides) == 1 else ''}",
        knees=knees,
        ceiling=ceiling,
    )
    written = [out / "results.json", out / "latency_throughput.png"]
    if args.save_samples:
        arrays = {}
        for i, s in enumerate(steps):
            if s.raw is None:
                continue
            for key in (
                "intended_s",
                "latency_ms",
                "sample_send_lag_ms",
                "sample_receive_lag_ms",
                "code",
                "class_index",
            ):
                arrays[f"{i}_{key}"] = s.raw[key]
        np.savez_compressed(out / "samples.npz", **arrays)
        written.append(out / "samples.npz")
    console.print("wrote " + ", ".join(str(p) for p in written))


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: JSON has no such numbers."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
