"""`tidal bench TARGET --model NAME ...`: run the steps, print, write JSON and a plot."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from .plot import plot_steps
from .report import print_table
from .runner import run_step
from .stats import StepResult
from .workload import make_workload

__all__ = ["add_arguments", "run"]


def _numbers(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"`{text}` is not a comma-separated list of numbers"
        ) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the options of `tidal bench`."""
    p.add_argument("target", metavar="TARGET", help="host:port of any KServe v2 gRPC server")
    p.add_argument("--model", required=True, help="model to drive")
    p.add_argument(
        "--mode",
        choices=("closed", "open"),
        default="closed",
        help="closed: N calls in flight; open: Poisson arrivals (%(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=_numbers,
        default=[1.0],
        metavar="N[,N...]",
        help="calls in flight, one step each (closed loop)",
    )
    p.add_argument(
        "--rate",
        "--rates",
        dest="rates",
        type=_numbers,
        metavar="R[,R...]",
        help="requests per second, one step each (open loop)",
    )
    p.add_argument("--duration", type=float, default=10.0, metavar="S", help="seconds per step")
    p.add_argument(
        "--warmup", type=float, default=2.0, metavar="S", help="unrecorded seconds before each step"
    )
    p.add_argument(
        "--slo-ms", type=float, help="latency objective: goodput counts answers within it"
    )
    p.add_argument("--api", choices=("unary", "stream"), default="unary")
    p.add_argument("--connections", type=int, default=4, help="HTTP/2 connections (%(default)s)")
    p.add_argument("--batch-size", type=int, default=1, help="rows per request (%(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="", help="name of this configuration in tables and plots")
    p.add_argument("--out", type=Path, help="write results.json and latency_throughput.png here")


def run(args: argparse.Namespace) -> int:
    """Run `tidal bench`; returns 1 when any request failed, else 0."""
    console = Console(width=max(Console().width, 120), stderr=False)
    workload = make_workload(args.target, args.model, batch_size=args.batch_size, seed=args.seed)
    label = args.label or args.model
    if args.mode == "open":
        if not args.rates:
            raise SystemExit("tidal bench: error: --mode open needs --rate R[,R...]")
        levels = [{"rate": r, "mode": "open"} for r in args.rates]
    else:
        levels = [{"concurrency": int(c), "mode": "closed"} for c in args.concurrency]
    steps: list[StepResult] = []
    for i, level in enumerate(levels):
        console.print(f"[{i + 1}/{len(levels)}] {label}: {level} for {args.duration:g} s")
        steps.append(
            run_step(
                args.target,
                workload,
                api=args.api,
                duration_s=args.duration,
                warmup_s=args.warmup,
                slo_ms=args.slo_ms,
                connections=args.connections,
                seed=args.seed + i,
                label=label,
                **level,
            )
        )
    print_table(steps, f"tidal bench {args.target} --model {args.model}", console)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        results = {
            "target": args.target,
            "model": args.model,
            "api": args.api,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "steps": [s.to_json() for s in steps],
        }
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        plot_steps(steps, args.out / "latency_throughput.png", title=f"{label} on {args.target}")
        console.print(
            f"wrote {args.out / 'results.json'} and {args.out / 'latency_throughput.png'}"
        )
    return 1 if any(s.errors for s in steps) else 0
