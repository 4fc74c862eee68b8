"""The `tidal` command.

```
tidal serve [REPO]     serve a model repository (the example models without one)
tidal zoo DIR          write the example models into DIR
tidal bench TARGET     measure latency and throughput of any KServe v2 gRPC server
tidal demo             serve the example models, drive load, print the table
```

Each subcommand is a pair of functions: `_add_<name>` declares its
arguments, `_run_<name>` runs it and returns the exit status; `_COMMANDS`
lists the `_add_` functions.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import TidalError
from .server import MAX_MESSAGE_BYTES, serve
from .zoo import write_test_models, write_zoo

__all__ = ["build_parser", "main"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "serve",
        parents=[_common()],
        help="serve a model repository over gRPC (KServe v2)",
        description="Serve every model in REPO until SIGINT or SIGTERM; a second"
        " signal exits at once. Without REPO, serves the example models.",
    )
    p.add_argument(
        "repo",
        metavar="REPO",
        nargs="?",
        type=Path,
        help="model repository: one folder per model (default: the example models)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port, 0 = any (%(default)s)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=8002,
        help="Prometheus /metrics port, 0 = any (%(default)s)",
    )
    p.add_argument("--no-metrics", action="store_true", help="serve no /metrics endpoint")
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=MAX_MESSAGE_BYTES,
        metavar="N",
        help="largest gRPC message accepted or sent (%(default)s)",
    )
    p.add_argument(
        "--runtime-threads",
        type=int,
        default=0,
        metavar="N",
        help="network runtime threads, 0 = one per core (%(default)s)",
    )
    p.add_argument(
        "--network-scheduling",
        choices=("batch", "normal"),
        default="batch",
        help="batch: a request arriving on a core busy with a batch waits for the batch"
        " to end instead of preempting it (Linux SCHED_BATCH); normal: the kernel's"
        " default (%(default)s)",
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="time admitted calls get to finish on shutdown (%(default)s)",
    )
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    return serve(
        args.repo,
        host=args.host,
        grpc_port=args.grpc_port,
        metrics_port=None if args.no_metrics else args.metrics_port,
        max_message_bytes=args.max_message_bytes,
        runtime_threads=args.runtime_threads,
        network_scheduling=args.network_scheduling,
        grace_s=args.grace_period,
    )


def _add_zoo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "zoo",
        parents=[_common()],
        help="write the example models into a directory",
        description="Write the example models (mlp, cnn, transformer, transformer_large) into"
        " DIR, one folder each, ready for `tidal serve DIR`.",
    )
    p.add_argument("directory", metavar="DIR", type=Path, help="model repository to write to")
    p.add_argument(
        "--test-models",
        action="store_true",
        help="also write the test suite's models (identity_all, add_sub, ...)",
    )
    p.set_defaults(run=_run_zoo)


def _run_zoo(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    names = write_zoo(directory)
    if args.test_models:
        names += write_test_models(directory)
    for name in names:
        print(directory / name)
    return 0


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .bench import command  # matplotlib and rich load only for this command

    p = commands.add_parser(
        "bench",
        parents=[_common()],
        help="measure latency and throughput of any KServe v2 gRPC server",
        description="Drive TARGET with closed-loop or open-loop (Poisson) load from a Rust"
        " load generator; print a table, and with --out write results.json and a plot.",
    )
    command.add_arguments(p)
    p.set_defaults(run=command.run)


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "demo",
        parents=[_common()],
        help="serve the example models, drive load and print the latency/throughput table",
    )
    p.add_argument("--duration", type=float, default=3.0, metavar="S", help="seconds per step")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(duration_s=args.duration)


_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_serve,
    _add_zoo,
    _add_bench,
    _add_demo,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `tidal` and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="tidal",
        description="An SLO-aware inference server for ONNX models (KServe v2 gRPC).",
    )
    parser.add_argument("--version", action="version", version=f"tidal {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(commands)
    return parser


def _common() -> argparse.ArgumentParser:
    """Options every subcommand takes, after its name (`tidal serve --log-level debug`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="info",
        help="least severe log messages shown, on stderr (%(default)s)",
    )
    return common


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `tidal` command.

    Args:
        argv: the arguments, without the program name; defaults to `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 1 on an error, 2 on a usage error
        (argparse exits with it directly).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        status: int = args.run(args)
    except (TidalError, OSError) as exc:
        # Expected failures (a bad repository, a port in use) get one line,
        # not a traceback; anything else is a bug and keeps its traceback.
        print(f"tidal: error: {exc}", file=sys.stderr)
        return 1
    return status
