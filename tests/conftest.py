"""Fixtures: one model repository and one real `tidal serve` process per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from helpers import TidalServer, running_server, start_server, stop_server, write_repository


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo, the test models and the suite's extra folders (see `helpers`)."""
    root = tmp_path_factory.mktemp("repository")
    write_repository(root)
    return root


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def server(repo: Path, log_dir: Path) -> Iterator[TidalServer]:
    """The session's server, serving every model of `repo`; must exit 0 on SIGTERM."""
    with running_server(repo, log_dir) as s:
        yield s


@pytest.fixture(scope="session")
def server_factory(log_dir: Path) -> Iterator[Callable[..., TidalServer]]:
    """Starts more servers: `server_factory(repo, "--max-message-bytes", "65536")`.

    Each is stopped at the end of the session and must exit 0.
    """
    started: list[TidalServer] = []

    def start(repo: Path, *args: str) -> TidalServer:
        s = start_server(repo, log_dir, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        stop_server(s)


@pytest.fixture
def client(server: TidalServer) -> Iterator[grpcclient.InferenceServerClient]:
    """A tritonclient gRPC client of the session's server."""
    c = grpcclient.InferenceServerClient(server.grpc)
    yield c
    c.close()
