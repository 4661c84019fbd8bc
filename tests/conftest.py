"""Shared fixtures. End-to-end tests run the real server (`python -m infergate serve`) on a free port with
the real packaged model, and call it with real clients."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import Server, run_cli, start_server

# The protocol suites call the shared server anonymously hundreds of times, and compare fresh generations:
# lift the anonymous tier's limits and turn the result cache off there (test_accounts.py tests both).
PROTOCOL_SERVER_CONFIG = """
[tiers.anonymous]
requests = 1000000
tokens_per_minute = 100000000
concurrent = 64
max_new_tokens = 8192

[cache]
enabled = false
"""


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server the protocol suites share: the default catalog, generous anonymous limits, no cache."""
    srv = start_server(tmp_path_factory.mktemp("infergate-home"), config=PROTOCOL_SERVER_CONFIG)
    try:
        srv.wait_healthy()
        # OpenAI clients always send a key: give the suites a real one.
        run_cli(srv, "users", "create", "suite", "--tier", "enterprise")
        srv.token = run_cli(srv, "tokens", "create", "suite").stdout.strip().splitlines()[-1]
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as c:
        yield c
