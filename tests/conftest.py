"""Shared fixtures. End-to-end tests run the real server (`python -m infergate serve`) on a free port with
the real packaged model, and call it with real clients."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import Server, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default server (no config file), shared by the whole session."""
    srv = start_server(tmp_path_factory.mktemp("infergate-home"))
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as c:
        yield c
