"""Replica state shared between gateway processes: in-flight counts and ejections, in Redis.

Nothing is written per request. Every ``SYNC_S`` each gateway publishes its own in-flight counts (one hash
field per gateway and replica, stamped with the time, so a crashed gateway's counts age out instead of
leaking) and reads everyone's, plus the ejection keys (``SET ... PX``: they expire on their own when a
replica comes back without anyone saying so). One pipeline, one round trip per sync.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["Board", "BoardView", "LocalBoard", "RedisBoard"]

log = logging.getLogger(__name__)
_STALE_S = 2.0  # a gateway's published counts older than this are ignored (it stopped or crashed)


@dataclass(frozen=True, slots=True)
class BoardView:
    others_in_flight: dict[str, int]  # url -> requests other gateways have on it
    ejected_s: dict[str, float]  # url -> seconds its ejection has left


class Board(Protocol):
    async def sync(self, model: str, in_flight: Mapping[str, int]) -> BoardView | None:
        """Publish this gateway's counts and read the shared state (None: nothing shared, or not reachable)."""

    async def eject(self, model: str, url: str, seconds: float, reason: str) -> None: ...

    async def restore(self, model: str, url: str) -> None: ...

    async def close(self) -> None: ...


class LocalBoard:
    """One gateway alone: nothing to share."""

    async def sync(self, model: str, in_flight: Mapping[str, int]) -> BoardView | None:
        return None

    async def eject(self, model: str, url: str, seconds: float, reason: str) -> None:
        return None

    async def restore(self, model: str, url: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisBoard:
    def __init__(self, url: str, namespace: str) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._ns = namespace
        self._me = uuid.uuid4().hex[:12]
        self._warned = False

    def _key(self, model: str, what: str) -> str:
        return f"{self._ns}:remote:{model}:{what}"

    async def sync(self, model: str, in_flight: Mapping[str, int]) -> BoardView | None:
        now = time.time()
        counts_key = self._key(model, "inflight")
        urls = list(in_flight)
        try:
            pipe = self._redis.pipeline(transaction=False)
            if urls:
                pipe.hset(counts_key, mapping={f"{self._me}|{u}": f"{n}|{now:.3f}" for u, n in in_flight.items()})
            pipe.expire(counts_key, 60)
            pipe.hgetall(counts_key)
            for url in urls:
                pipe.pttl(self._key(model, f"down:{url}"))
            replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            if not self._warned:
                log.warning("replica board: Redis unreachable (%s); each gateway balances on its own view", exc)
                self._warned = True
            return None
        self._warned = False
        fields: dict[bytes, bytes] = replies[-1 - len(urls)]
        others: dict[str, int] = {}
        stale: list[bytes] = []
        for field, value in fields.items():
            gateway, _, url = field.decode().partition("|")
            count, _, stamp = value.decode().partition("|")
            if now - float(stamp) > _STALE_S:
                stale.append(field)
            elif gateway != self._me:
                others[url] = others.get(url, 0) + int(count)
        if stale:
            await self._redis.hdel(counts_key, *stale)
        ttls = replies[len(replies) - len(urls) :]
        ejected = {url: ttl / 1000 for url, ttl in zip(urls, ttls, strict=True) if ttl and ttl > 0}
        return BoardView(others, ejected)

    async def eject(self, model: str, url: str, seconds: float, reason: str) -> None:
        try:
            await self._redis.set(self._key(model, f"down:{url}"), reason[:500], px=max(1, int(seconds * 1000)))
        except (RedisError, OSError):
            pass  # the next sync warns; this gateway still ejects it locally

    async def restore(self, model: str, url: str) -> None:
        try:
            await self._redis.delete(self._key(model, f"down:{url}"))
        except (RedisError, OSError):
            pass

    async def close(self) -> None:
        await self._redis.aclose()
