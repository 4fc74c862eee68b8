"""The server's lifecycle: start, serve until told to stop, stop gracefully.

`serve` is the whole story in one function. The gRPC server itself lives in
the extension (`tidal._core.Server`); this module wires it to the model
repository and the metrics exporter and owns the process's signals.

# Shutdown

SIGINT or SIGTERM marks the server not ready (health checks report
NOT_SERVING, so balancers stop sending), stops accepting calls, answers
what was admitted within the grace period, then returns. A second signal
exits the process at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Literal

from . import _core
from .metrics import MetricsExporter
from .repository import ModelRepository, RepositoryManager
from .zoo import write_zoo

__all__ = ["MAX_MESSAGE_BYTES", "serve", "zoo_directory"]

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 2**31 - 1
"""The default message size limit: the largest a protobuf message can be."""

_POLL_S = 0.25
"""How often the main thread wakes from waiting, so that signal handlers run."""


def zoo_directory() -> Path:
    """Write the example models into the user's cache and return that repository.

    The models are written afresh each time (it takes a fraction of a
    second), so a newer tidal never serves an older zoo.

    Returns:
        `$XDG_CACHE_HOME/tidal/zoo` (by default `~/.cache/tidal/zoo`), or a new
        temporary directory when the cache is not writable.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    directory = Path(cache) / "tidal" / "zoo"
    try:
        write_zoo(directory)
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="tidal-zoo-"))
        logger.warning("cannot write to `%s` (%s); using `%s`", directory, exc, fallback)
        write_zoo(fallback)
        return fallback
    return directory


def serve(
    repo: Path | None = None,
    *,
    host: str = "127.0.0.1",
    grpc_port: int = 8001,
    metrics_port: int | None = 8002,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    runtime_threads: int = 0,
    network_scheduling: Literal["batch", "normal"] = "batch",
    grace_s: float = 5.0,
    shutdown: threading.Event | None = None,
) -> int:
    """Serve every model of a repository until SIGINT or SIGTERM.

    Once every model has been loaded (or has failed to, which is logged),
    prints one line to stdout,
    `tidal: serving N models on HOST:PORT (metrics on HOST:MPORT)`,
    with the bound ports.

    Args:
        repo: the model repository; None serves the built-in example models.
        host: the address gRPC and metrics listen on.
        grpc_port: the gRPC port; 0 picks a free one.
        metrics_port: the Prometheus `/metrics` port; 0 picks a free one,
            None serves no metrics.
        max_message_bytes: the largest gRPC message accepted or sent.
        runtime_threads: threads of the core's network runtime; 0 is one per core.
        network_scheduling: `"batch"` (the default) keeps an arriving
            request from preempting a running batch on a shared core (Linux
            SCHED_BATCH: it is read when the batch ends); `"normal"` lets it.
        grace_s: seconds that calls admitted before shutdown get to finish.
        shutdown: set it to stop the server, when `serve` runs outside the
            main thread (where it cannot install signal handlers).

    Returns:
        The process exit status: 0 after a requested shutdown, 1 when the
        gRPC server stopped by itself.

    Raises:
        NotADirectoryError: `repo` is not a directory.
        OSError: an address cannot be bound.
    """
    if repo is None:
        repo = zoo_directory()
        logger.info("no repository given: serving the example models in `%s`", repo)
    repository = ModelRepository(repo)
    core = _core.Server(
        host=host,
        port=grpc_port,
        max_message_bytes=max_message_bytes,
        runtime_threads=runtime_threads,
        network_scheduling=network_scheduling,
    )

    with _stop_on_signals(shutdown if shutdown is not None else threading.Event()) as stop:
        port = core.start()
        try:
            manager = RepositoryManager(core, repository)
            served = manager.load_all()
            core.set_repository(manager)
            core.set_ready(True)
            with contextlib.ExitStack() as exporters:
                metrics = "metrics off"
                if metrics_port is not None:
                    exporter = MetricsExporter(core, port=metrics_port, host=host)
                    exporters.callback(exporter.close)
                    metrics = f"metrics on {_address(host, exporter.port)}"
                print(f"tidal: serving {len(served)} models on {_address(host, port)} ({metrics})")
                sys.stdout.flush()

                while not stop.is_set():
                    if core.wait(_POLL_S):
                        logger.error("the gRPC server stopped by itself")
                        return 1
        finally:
            logger.info("stopping: answering admitted calls for up to %.1f s", grace_s)
            core.set_ready(False)
            _stop(core, grace_s)
    logger.info("stopped")
    return 0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _stop(core: _core.Server, grace_s: float) -> None:
    # `Server.stop` blocks with the GIL released, and Python runs signal
    # handlers only between bytecodes of the main thread: waiting for it in
    # short joins keeps a second Ctrl-C able to force the exit.
    stopper = threading.Thread(target=core.stop, args=(grace_s,), name="tidal-stop", daemon=True)
    stopper.start()
    while stopper.is_alive():
        stopper.join(_POLL_S)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Set `stop` on SIGINT or SIGTERM; a second signal exits the process at once."""
    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread.
        yield stop
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            logger.warning("%s again: exiting now", name)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        logger.info("%s: shutting down (send it again to exit at once)", name)
        stop.set()

    signums = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, handle) for s in signums}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
