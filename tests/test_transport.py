"""HTTP/2 connections when the server falls behind.

A server that stops reading for a moment (a burst it cannot parse as fast as
it comes, a pause of the whole process) must hold its clients back with
flow control and answer or refuse every call afterwards, not close the
connections they are waiting on.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from helpers import running_server
from tidal import _core
from tidal.bench import TrafficClass, make_workload

# Calls offered per second on one connection, and how long the server is
# paused: thousands of calls wait for the connection's window meanwhile.
RATE = 10_000.0
PAUSE_S = 0.8


def test_a_paused_server_answers_every_call_on_its_connection_afterwards(
    repo: Path, log_dir: Path, tmp_path: Path
) -> None:
    only_mlp = tmp_path / "repo"
    only_mlp.mkdir()
    shutil.copytree(repo / "mlp", only_mlp / "mlp")
    with running_server(only_mlp, log_dir) as server:
        workload = make_workload(
            server.grpc, "mlp", count=16, classes=(TrafficClass(name="online", priority=1),)
        )
        result: dict[str, Any] = {}

        def drive() -> None:
            result.update(
                _core.run_load(
                    server.grpc,
                    workload.requests,
                    mode="open",
                    rate=RATE,
                    connections=1,
                    warmup_s=0.2,
                    duration_s=2.5,
                    expected_outputs=workload.expected_outputs,
                )
            )

        load = threading.Thread(target=drive)
        load.start()
        time.sleep(0.7)
        server.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)
        finally:
            server.process.send_signal(signal.SIGCONT)
            load.join()
        stderr = server.stderr()
    errors = dict(result["errors"])
    # Calls that waited out the pause are refused or expire; nothing else may fail.
    transport = {k: v for k, v in errors.items() if k not in ("UNAVAILABLE", "DEADLINE_EXCEEDED")}
    assert not transport, (transport, dict(result["error_examples"]), stderr[-2000:])
    assert result["unanswered"] == 0
    # And the server serves again: calls sent in the window's last half second are answered.
    late = result["intended_s"] > result["window_s"] - 0.5
    assert (result["code"][late] == 0).any(), errors
