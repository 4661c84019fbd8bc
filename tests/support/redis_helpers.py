"""The real Redis the tests share (127.0.0.1:6379), and a helper that closes what a test opened."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol, TypeVar

REDIS_URL = "redis://127.0.0.1:6379/0"


class _Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


@contextlib.asynccontextmanager
async def opened(store: C) -> AsyncIterator[C]:
    try:
        yield store
    finally:
        await store.close()
