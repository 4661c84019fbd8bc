"""Shared fixtures. End-to-end tests run the real server (`python -m infergate serve`) on a free port with
the real packaged model, and call it with real clients."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import OPEN_ANONYMOUS_NO_CACHE, Server, new_user_token, start_server

PROTOCOL_SERVER_CONFIG = OPEN_ANONYMOUS_NO_CACHE  # the protocol suites compare fresh generations


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server the protocol suites share: the default catalog, generous anonymous limits, no cache."""
    srv = start_server(tmp_path_factory.mktemp("infergate-home"), config=PROTOCOL_SERVER_CONFIG)
    try:
        srv.wait_healthy()
        # OpenAI clients always send a key: give the suites a real one.
        srv.token = new_user_token(srv, "suite", "enterprise")
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as c:
        yield c
