"""Several gateway processes sharing limits, cache and accounts through Redis and PostgreSQL, and a Redis
that stops answering. Uses the real PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379)."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
import redis

from tests.support.remote import LlamaServer, gateway_config, llama_server
from tests.support.server import MODEL_ID, Server, new_user_token, run_cli, start_server

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
BODY = {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 3}}


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A database of our own on the shared server, dropped afterwards."""
    name = f"infergate_e2e_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    ns = f"infergate-test-{secrets.token_hex(4)}"
    yield ns
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{ns}:*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, database: str, namespace: str) -> Iterator[tuple[Server, Server]]:
    config = f'redis_namespace = "{namespace}"\n\n[tiers.free]\nrequests = 6\nconcurrent = 16\n'
    env = {"INFERGATE_DATABASE_URL": database, "INFERGATE_REDIS_URL": REDIS_URL}
    servers: list[Server] = []
    try:
        for i in range(2):
            servers.append(start_server(tmp_path_factory.mktemp(f"gateway{i}"), config=config, env=env))
        for server in servers:
            server.wait_healthy()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def test_two_gateways_share_accounts_limits_cache_and_usage(pair: tuple[Server, Server], database: str) -> None:
    _share_limits_cache_and_usage(*pair, user="pat", computed_on="cpu")


def _share_limits_cache_and_usage(a: Server, b: Server, user: str, computed_on: str) -> None:
    """A free user's limit of 6 holds exactly across both gateways, an answer computed on A is a cache hit on B,
    and every request's usage row lands in the shared database."""
    token = new_user_token(a, user, "free")
    headers = {"Authorization": f"Bearer {token}"}
    # The user made through one gateway's database works on the other: they share PostgreSQL.
    urls = [s.model_url for s in (a, b)] * 6
    with ThreadPoolExecutor(12) as pool:
        bodies = [{"inputs": f"Question {i}:", "parameters": {"max_new_tokens": 2}} for i in range(12)]
        responses = list(
            pool.map(
                lambda ub: httpx.post(ub[0], json=ub[1], headers=headers, timeout=120), zip(urls, bodies, strict=True)
            )
        )
    # One limit of 6 across both processes, exactly.
    assert sorted(r.status_code for r in responses) == [200] * 6 + [429] * 6
    # Their cache is shared too: an anonymous answer computed on A is a hit on B.
    first = httpx.post(a.model_url, json=BODY, timeout=60)
    second = httpx.post(b.model_url, json=BODY, timeout=60)
    assert first.headers["x-compute-type"] == computed_on
    assert second.headers["x-compute-type"] == "cache"
    assert second.json() == first.json()
    # Usage lands in PostgreSQL (written in batches, within a couple of seconds).
    deadline = time.monotonic() + 10
    while True:
        table = run_cli(a, "usage", user).stdout
        row = next((line.split() for line in table.splitlines()[1:] if line.startswith(user)), None)
        if row is not None and row[2] == "12":
            break
        assert time.monotonic() < deadline, table
        time.sleep(0.5)


class HangingRedis:
    """A TCP server that accepts connections and never answers: a Redis that stopped responding."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_a_redis_that_stops_answering_never_breaks_requests(tmp_path_factory: pytest.TempPathFactory) -> None:
    hang = HangingRedis()
    config = "[tiers.anonymous]\nrequests = 4\nconcurrent = 16\n"
    server = start_server(
        tmp_path_factory.mktemp("hanging-redis"),
        config=config,
        env={"INFERGATE_REDIS_URL": f"redis://127.0.0.1:{hang.port}/0"},
    )
    try:
        server.wait_healthy()
        statuses = []
        for i in range(6):
            t0 = time.monotonic()
            r = httpx.post(server.model_url, json={"inputs": f"Hi {i}", "parameters": {"max_new_tokens": 2}},
                           timeout=60)  # fmt: skip
            statuses.append(r.status_code)
            assert time.monotonic() - t0 < 10, "a hanging Redis stalled the request"
        # The limit still holds, on this process's own counters: never a 500 because of Redis.
        assert statuses == [200] * 4 + [429] * 2
        log = server.log()
        assert "unreachable" in log
        assert log.count("unreachable") <= 3  # said once, not per request
    finally:
        server.stop()
        hang.close()


@pytest.fixture(scope="module")
def remote_pair(
    tmp_path_factory: pytest.TempPathFactory, database: str, namespace: str
) -> Iterator[tuple[Server, Server, LlamaServer]]:
    """Two gateways on one PostgreSQL and Redis, both in front of one llama.cpp server. Their own probes are slow
    (30 s), so what one gateway learns of a replica reaches the other only through Redis."""
    engine = llama_server(tmp_path_factory.mktemp("llama-shared"))
    config = (
        f'redis_namespace = "{namespace}-remote"\n'
        + gateway_config([engine.url], cache=True, probe_interval_s=30.0)
        + "\n[tiers.free]\nrequests = 6\nconcurrent = 16\n"
    )
    env = {"INFERGATE_DATABASE_URL": database, "INFERGATE_REDIS_URL": REDIS_URL}
    servers: list[Server] = []
    try:
        for i in range(2):
            servers.append(start_server(tmp_path_factory.mktemp(f"remote-gateway{i}"), config=config, env=env))
        for server in servers:
            server.wait_healthy(60)
        yield servers[0], servers[1], engine
    finally:
        for server in servers:
            server.stop()
        engine.stop()


def _replica_state(server: Server) -> str:
    model = next(m for m in httpx.get(f"{server.base_url}/v1/models").json()["data"] if m["id"] == MODEL_ID)
    return str(model["replicas"][0]["state"])


def test_two_gateways_in_front_of_a_remote_engine_share_limits_cache_usage_and_ejections(
    remote_pair: tuple[Server, Server, LlamaServer],
) -> None:
    a, b, engine = remote_pair
    _share_limits_cache_and_usage(a, b, user="remote-pat", computed_on="remote")
    # The engine dies; A finds out on its next request (B's own probe is 30 s away) and B sees it through Redis.
    assert _replica_state(b) == "up"
    engine.kill()
    refused = httpx.post(a.model_url, json={"inputs": "x", "parameters": {"max_new_tokens": 2}}, timeout=30)
    assert refused.status_code == 503 and engine.url in refused.json()["error"]
    seen = time.monotonic()
    while _replica_state(b) != "ejected":
        assert time.monotonic() - seen < 1.0, "gateway B did not see the ejection within 1 s"
        time.sleep(0.02)
