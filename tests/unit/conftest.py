"""Fixtures shared by the Redis-backed unit tests: a key prefix of each test's own, and Redis URLs that hang
or refuse."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.support.redis_helpers import REDIS_URL


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (never FLUSHDB: the Redis is shared)."""
    pfx = f"infergate-test:{uuid.uuid4().hex}:"
    yield pfx
    with redis.Redis.from_url(REDIS_URL) as r:
        keys = list(r.scan_iter(match=pfx + "*", count=1000))
        if keys:
            r.delete(*keys)


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A "Redis" that accepts connections and never answers: a listening socket nobody accept()s (the kernel
    completes the handshake and buffers what the client sends)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.fixture
def closed_url() -> str:
    """A port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"
