"""`python -m tidal.bench.echo`: the server that answers at once, in a process of its own.

`tidal bench --self-test` runs it (pinned to its own cores when asked) and
drives it, to measure the load generator alone. It prints one line,
`echo on HOST:PORT`, once it serves, and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from .. import _core

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the echo model until SIGINT or SIGTERM; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m tidal.bench.echo", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port (%(default)s)")
    p.add_argument("--threads", type=int, default=1, help="server threads (%(default)s)")
    p.add_argument("--model", default="echo")
    p.add_argument("--datatype", default="FP32")
    p.add_argument(
        "--shape",
        default="16",
        help="comma-separated dimensions of x and y, without the batch (%(default)s)",
    )
    p.add_argument("--max-batch-size", type=int, default=0)
    p.add_argument("--fail-every", type=int, default=0, help="fail every n-th call (0: never)")
    args = p.parse_args(argv)
    server = _core.EchoServer(
        host=args.host,
        port=args.port,
        threads=args.threads,
        model=args.model,
        datatype=args.datatype,
        shape=[int(d) for d in args.shape.split(",")],
        max_batch_size=args.max_batch_size,
        fail_every=args.fail_every,
    )
    port = server.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"echo on {args.host}:{port}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
