"""Starts `tidal serve` (or the echo server) as a child process and stops it,
for demos, benchmarks and tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["EchoProcess", "ServerProcess"]

_READY = re.compile(r"on (?P<host>[\w.:-]+):(?P<port>\d+) \(metrics on [\w.:-]+:(?P<metrics>\d+)\)")


class ServerProcess:
    """`tidal serve` in a child process, on free ports of 127.0.0.1.

    Args:
        repo: model repository; None serves the example models.
        extra_args: more `tidal serve` options.
        cpus: CPU numbers to pin the server to (Linux), e.g. `[1]`.
        startup_timeout_s: how long to wait for the ready line.
    """

    def __init__(
        self,
        repo: Path | None = None,
        *,
        extra_args: Sequence[str] = (),
        cpus: Sequence[int] | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self._args = [sys.executable, "-m", "tidal", "serve"]
        if repo is not None:
            self._args.append(str(repo))
        self._args += ["--grpc-port", "0", "--metrics-port", "0", *extra_args]
        self._cpus = cpus
        self._timeout = startup_timeout_s
        self._ready = _READY
        self._process: subprocess.Popen[str] | None = None
        self.target = ""
        self.metrics_port = 0

    def start(self) -> ServerProcess:
        """Start the server and wait until it serves; raises RuntimeError if it does not."""
        cpus = set(self._cpus) if self._cpus is not None else None
        self._process = subprocess.Popen(
            self._args,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        assert self._process.stdout is not None
        # The ready line is the only line the server writes to stdout.
        line = self._process.stdout.readline()
        match = self._ready.search(line)
        if not match:
            self.stop()
            raise RuntimeError(
                f"`{' '.join(self._args[1:])}` did not start (its first line: {line!r})"
            )
        self.target = f"127.0.0.1:{match['port']}"
        self.metrics_port = int(match["metrics"]) if "metrics" in match.groupdict() else 0
        return self

    @property
    def pid(self) -> int:
        """The server's process id; 0 when it is not running."""
        return self._process.pid if self._process is not None else 0

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM the server and wait for it; returns its exit status."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            status = self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            status = self._process.wait()
        if self._process.stdout:
            self._process.stdout.close()
        self._process = None
        return status

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_ECHO_READY = re.compile(r"echo on (?P<host>[\w.:-]+):(?P<port>\d+)")


class EchoProcess(ServerProcess):
    """The server that answers at once (`python -m tidal.bench.echo`) in a
    child process, on a free port of 127.0.0.1.

    Args:
        cpus: CPU numbers to pin it to (Linux), e.g. `{1}`.
        extra_args: more options (`--threads`, `--fail-every`, `--shape`, ...).
    """

    def __init__(
        self, *, cpus: Iterable[int] | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        super().__init__(cpus=list(cpus) if cpus is not None else None)
        self._args = [sys.executable, "-m", "tidal.bench.echo", *extra_args]
        self._ready = _ECHO_READY
