"""Exact, atomic counters for rate limits: in this process, or in Redis shared by every gateway process.

Fixed windows (as the hosted API's limits): a key's count lives for its window. ``hit`` adds its whole cost
or nothing, so 12 concurrent requests against 5 remaining give exactly 5 successes, here and in Redis (one
Lua script per call: the check and the add are one atomic step).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["Counters", "Decision", "FallbackCounters", "InMemoryCounters", "RedisCounters"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int  # after this hit, never negative
    reset_s: float  # until the current window ends
    window: int  # the window's index (now // window_s): pass it back to refund()


class Counters(Protocol):
    async def hit(self, key: str, cost: int, limit: int, window_s: float) -> Decision: ...
    async def refund(self, key: str, amount: int, window_s: float, window: int) -> None: ...
    async def acquire(self, key: str, limit: int, ttl_s: float) -> bool: ...
    async def release(self, key: str) -> None: ...
    async def close(self) -> None: ...


def _window(window_s: float, now: float) -> tuple[int, float]:
    index = int(now // window_s)
    return index, (index + 1) * window_s - now


class InMemoryCounters:
    """Counters of this process (one event loop: no awaits inside an operation, so each is atomic)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._expiry: dict[tuple[str, int], float] = {}
        self._slots: dict[str, list[float]] = {}

    def _prune(self, now: float) -> None:
        if len(self._expiry) > 10_000:
            for k in [k for k, t in self._expiry.items() if t <= now]:
                self._counts.pop(k, None)
                self._expiry.pop(k, None)

    async def hit(self, key: str, cost: int, limit: int, window_s: float) -> Decision:
        now = time.time()
        self._prune(now)
        index, reset = _window(window_s, now)
        used = self._counts.get((key, index), 0)
        allowed = used + cost <= limit
        if allowed:
            used += cost
            self._counts[(key, index)] = used
            self._expiry[(key, index)] = now + reset
        return Decision(allowed, limit, max(0, limit - used), reset, index)

    async def refund(self, key: str, amount: int, window_s: float, window: int) -> None:
        if (key, window) in self._counts:
            self._counts[(key, window)] = max(0, self._counts[(key, window)] - amount)

    async def acquire(self, key: str, limit: int, ttl_s: float) -> bool:
        now = time.time()
        held = [t for t in self._slots.get(key, []) if t > now]
        if len(held) >= limit:
            self._slots[key] = held
            return False
        self._slots[key] = [*held, now + ttl_s]
        return True

    async def release(self, key: str) -> None:
        held = self._slots.get(key)
        if held:
            held.remove(min(held))
            if not held:
                del self._slots[key]

    async def close(self) -> None:
        return None


_HIT = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost, limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if used + cost > limit then return {0, used} end
used = redis.call('INCRBY', KEYS[1], cost)
if used == cost then redis.call('PEXPIRE', KEYS[1], ttl) end
return {1, used}
"""
_REFUND = """
local used = tonumber(redis.call('GET', KEYS[1]) or '-1')
if used < 0 then return 0 end
local left = math.max(0, used - tonumber(ARGV[1]))
redis.call('SET', KEYS[1], left, 'KEEPTTL')
return left
"""
_ACQUIRE = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_RELEASE = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held <= 1 then redis.call('DEL', KEYS[1]) else redis.call('DECR', KEYS[1]) end
return 1
"""


def redis_client(url: str) -> aioredis.Redis:
    """Short timeouts: a Redis that stops answering must cost a request well under a second."""
    return aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


class RedisCounters:
    """Counters in Redis, shared by every gateway process that uses the same URL and key names."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = redis_client(url)
        self._hit = self._redis.register_script(_HIT)
        self._refund = self._redis.register_script(_REFUND)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)

    async def hit(self, key: str, cost: int, limit: int, window_s: float) -> Decision:
        index, reset = _window(window_s, time.time())
        ttl_ms = max(1, math.ceil(reset * 1000))
        allowed, used = await self._hit(keys=[f"{key}:{index}"], args=[cost, limit, ttl_ms])
        return Decision(bool(allowed), limit, max(0, limit - int(used)), reset, index)

    async def refund(self, key: str, amount: int, window_s: float, window: int) -> None:
        await self._refund(keys=[f"{key}:{window}"], args=[amount])

    async def acquire(self, key: str, limit: int, ttl_s: float) -> bool:
        return bool(await self._acquire(keys=[key], args=[limit, math.ceil(ttl_s * 1000)]))

    async def release(self, key: str) -> None:
        await self._release(keys=[key])

    async def close(self) -> None:
        await self._redis.aclose()


class Fallback:
    """Calls the primary (Redis); while it fails, the fallback (this process) answers instead. Logs once
    when Redis goes away and once when it is back; never raises because of Redis."""

    def __init__(self, what: str, url: str, retry_after_s: float) -> None:
        self._what = what
        self._url = url
        self._retry_after = retry_after_s
        self._down_until = 0.0
        self._down = False

    async def call(self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        if now >= self._down_until:
            try:
                result = await primary()
            except (RedisError, OSError, TimeoutError) as exc:
                if not self._down:
                    log.warning(
                        "Redis at %s is unreachable (%s); %s fall back to this process until it answers again",
                        self._url, type(exc).__name__, self._what,
                    )  # fmt: skip
                self._down = True
                self._down_until = now + self._retry_after
            else:
                if self._down:
                    log.warning("Redis at %s answers again; %s are shared again", self._url, self._what)
                    self._down = False
                return result
        return await fallback()


class FallbackCounters:
    def __init__(self, primary: RedisCounters, fallback: InMemoryCounters, retry_after_s: float = 5.0) -> None:
        self._primary = primary
        self._fallback = fallback
        self._guard = Fallback("rate limits", primary.url, retry_after_s)

    async def hit(self, key: str, cost: int, limit: int, window_s: float) -> Decision:
        return await self._guard.call(
            lambda: self._primary.hit(key, cost, limit, window_s),
            lambda: self._fallback.hit(key, cost, limit, window_s),
        )

    async def refund(self, key: str, amount: int, window_s: float, window: int) -> None:
        await self._guard.call(
            lambda: self._primary.refund(key, amount, window_s, window),
            lambda: self._fallback.refund(key, amount, window_s, window),
        )

    async def acquire(self, key: str, limit: int, ttl_s: float) -> bool:
        return await self._guard.call(
            lambda: self._primary.acquire(key, limit, ttl_s), lambda: self._fallback.acquire(key, limit, ttl_s)
        )

    async def release(self, key: str) -> None:
        await self._guard.call(lambda: self._primary.release(key), lambda: self._fallback.release(key))

    async def close(self) -> None:
        await self._primary.close()
