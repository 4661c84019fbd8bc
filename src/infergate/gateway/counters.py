"""Exact, atomic counters for rate limits: fixed windows (requests, tokens) and concurrency slots.

Three implementations of one `Counters` protocol: `InMemoryCounters` (one process), `RedisCounters` (shared by
every gateway process through one Redis, each operation one atomic Lua script), and `FallbackCounters`, which
serves from Redis and falls back to in-process counters while Redis is unreachable. This module is the one place
that translates redis-py's exceptions (into `BackendUnavailable`); `cache_backends` reuses its Redis plumbing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

__all__ = [
    "BackendUnavailable",
    "Counters",
    "Decision",
    "FallbackCounters",
    "Failover",
    "InMemoryCounters",
    "RedisCounters",
    "call_redis",
    "connect_redis",
    "redacted_url",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# A Redis that stops answering must not stall a request: each socket step waits at most this long, and a whole
# operation at most _OP_TIMEOUT_S (connect + one command, with slack), after which the caller falls back.
_SOCKET_TIMEOUT_S = 0.5
_OP_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one `Counters.hit`."""

    allowed: bool
    limit: int
    remaining: int  # after this hit (never negative)
    reset_s: float  # seconds until the current window ends, in (0, window_s]
    window: int  # the window's index (time // window_s); pass it back to refund()


class Counters(Protocol):
    """Rate-limit counters. Window counts are kept per (key, window_s); slots per key."""

    async def hit(self, key: str, cost: int, limit: int, window_s: float) -> Decision:
        """Fixed window: add `cost` to the current window's count only if count + cost <= limit (all or
        nothing); otherwise allowed=False and nothing is added. cost=0 reads the state without changing it."""
        ...

    async def refund(self, key: str, amount: int, window_s: float, window: int) -> None:
        """Give back `amount` of an earlier hit in `window` (a reservation settled lower). A no-op once that
        window is over; the count never goes below 0."""
        ...

    async def acquire(self, key: str, limit: int, ttl_s: float) -> bool:
        """Take a concurrency slot: True (and +1) if fewer than `limit` are held, else False. The count expires
        `ttl_s` after the last acquire, a safety net against holders that crashed before release()."""
        ...

    async def release(self, key: str) -> None:
        """Give back a slot taken by acquire(); never below 0."""
        ...

    async def close(self) -> None: ...


class BackendUnavailable(Exception):
    """A shared backend (Redis) did not answer: refused, reset, timed out or errored. Fallbacks catch this."""


def _check_hit(cost: int, limit: int, window_s: float) -> None:
    if cost < 0 or limit < 0:
        raise ValueError(f"cost and limit must be >= 0, got cost={cost} limit={limit}")
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")


def _window_of(now: float, window_s: float) -> tuple[int, float]:
    """(window index, seconds until it ends), the latter clamped into (0, window_s] against float rounding."""
    window = math.floor(now / window_s)
    reset_s = (window + 1) * window_s - now
    return window, min(window_s, max(reset_s, 1e-6))


# --- in-process ------------------------------------------------------------------------------------------------


class InMemoryCounters:
    """Counters of this process only. Atomic because no operation awaits: it must be used from one event loop.

    Windows are keyed by wall-clock time (like Redis's), so a window index means the same thing in both."""

    _PRUNE_EVERY_S = 1.0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # (key, window_s, window) -> (used, end of that window); pruned at most once per _PRUNE_EVERY_S.
        self._windows: dict[tuple[str, float, int], tuple[int, float]] = {}
        self._slots: dict[str, tuple[int, float]] = {}  # key -> (held, expires at)
        self._next_prune = 0.0

    def __len__(self) -> int:
        """Live entries (windows and slot counts); for tests and metrics."""
        return len(self._windows) + len(self._slots)

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + self._PRUNE_EVERY_S
        self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        self._slots = {k: v for k, v in self._slots.items() if v[1] > now}

    async def hit(self, key: str, cost: int, limit: int, window_s: float) -> Decision:
        _check_hit(cost, limit, window_s)
        now = self._clock()
        self._prune(now)
        window, reset_s = _window_of(now, window_s)
        wkey = (key, window_s, window)
        used = self._windows.get(wkey, (0, 0.0))[0]
        allowed = used + cost <= limit
        if allowed and cost:
            used += cost
            self._windows[wkey] = (used, now + reset_s)
        return Decision(allowed, limit, max(0, limit - used), reset_s, window)

    async def refund(self, key: str, amount: int, window_s: float, window: int) -> None:
        current, _ = _window_of(self._clock(), window_s)
        wkey = (key, window_s, window)
        if current != window or wkey not in self._windows or amount <= 0:
            return
        used, end = self._windows[wkey]
        self._windows[wkey] = (max(0, used - amount), end)

    async def acquire(self, key: str, limit: int, ttl_s: float) -> bool:
        now = self._clock()
        self._prune(now)
        held, expires = self._slots.get(key, (0, 0.0))
        if expires <= now:
            held = 0
        if held >= limit:
            return False
        self._slots[key] = (held + 1, now + ttl_s)
        return True

    async def release(self, key: str) -> None:
        held, expires = self._slots.get(key, (0, 0.0))
        if held <= 1 or expires <= self._clock():
            self._slots.pop(key, None)
        else:
            self._slots[key] = (held - 1, expires)

    async def close(self) -> None:
        self._windows.clear()
        self._slots.clear()


# --- Redis -----------------------------------------------------------------------------------------------------


def connect_redis(url: str) -> aioredis.Redis:
    """A client with short timeouts and no retries: a failure surfaces at once, and the fallback takes over."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=_SOCKET_TIMEOUT_S,
        socket_connect_timeout=_SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def redacted_url(url: str) -> str:
    """The URL without credentials, for log lines (a Redis URL may carry a password)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def call_redis(op: Awaitable[T], timeout_s: float = _OP_TIMEOUT_S) -> T:
    """Await one Redis operation. Any Redis, socket or timeout error becomes BackendUnavailable; the overall
    timeout bounds an operation even when each socket step stays within its own timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            return await op
    except (RedisError, OSError, TimeoutError) as exc:
        raise BackendUnavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc


# The window is computed from Redis's clock (TIME), so gateway processes with skewed clocks still share windows.
# Times are integer microseconds: exact in Lua's doubles (< 2^53) and returned as integers (Redis truncates
# Lua numbers in replies). The key of a window is KEYS[1] .. ":" .. index; it expires when the window ends.
_LUA_NOW = """
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

_HIT = (
    _LUA_NOW
    + """
local cost, limit, window_us = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window = math.floor(now_us / window_us)
local key = KEYS[1] .. ':' .. string.format('%d', window)
local reset_us = (window + 1) * window_us - now_us
local used = tonumber(redis.call('GET', key) or '0')
local allowed = 0
if used + cost <= limit then
  allowed = 1
  if cost > 0 then
    used = redis.call('INCRBY', key, cost)
    if used == cost then redis.call('PEXPIRE', key, math.ceil(reset_us / 1000) + 1) end
  end
end
return {allowed, used, window, reset_us}
"""
)

_REFUND = (
    _LUA_NOW
    + """
local amount, window_us, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if math.floor(now_us / window_us) ~= window then return 0 end
local key = KEYS[1] .. ':' .. string.format('%d', window)
local used = tonumber(redis.call('GET', key) or '0')
local give = math.min(amount, used)
if give <= 0 then return 0 end
redis.call('DECRBY', key, give)
return give
"""
)

_ACQUIRE = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held <= 1 then redis.call('DEL', KEYS[1]); return 0 end
return redis.call('DECR', KEYS[1])
"""


class RedisCounters:
    """Counters in Redis, shared by every process that uses the same URL and prefix. Each operation is one atomic
    script (one round trip, EVALSHA). Raises BackendUnavailable when Redis does not answer in time.

    Names start with prefix + key (then `:w<window_s>:<index>` or `:slots`), so a caller's namespace in its keys
    covers everything stored here."""

    def __init__(self, url: str, prefix: str = "") -> None:
        self.url = url
        self._prefix = prefix
        self._redis = connect_redis(url)
        self._hit = self._redis.register_script(_HIT)
        self._refund = self._redis.register_script(_REFUND)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)

    def _window_key(self, key: str, window_s: float) -> str:
        # window_s is part of the name, so one key used with two window lengths never mixes their counts.
        return f"{self._prefix}{key}:w{window_s:g}"

    def _slot_key(self, key: str) -> str:
        return f"{self._prefix}{key}:slots"

    @staticmethod
    def _window_us(window_s: float) -> int:
        return max(1, round(window_s * 1_000_000))

    async def hit(self, key: str, cost: int, limit: int, window_s: float) -> Decision:
        _check_hit(cost, limit, window_s)
        keys = [self._window_key(key, window_s)]
        reply = await call_redis(self._hit(keys=keys, args=[cost, limit, self._window_us(window_s)]))
        allowed, used, window, reset_us = (int(x) for x in reply)
        reset_s = min(window_s, max(reset_us / 1_000_000, 1e-6))
        return Decision(bool(allowed), limit, max(0, limit - used), reset_s, window)

    async def refund(self, key: str, amount: int, window_s: float, window: int) -> None:
        if amount <= 0:
            return
        keys = [self._window_key(key, window_s)]
        await call_redis(self._refund(keys=keys, args=[amount, self._window_us(window_s), window]))

    async def acquire(self, key: str, limit: int, ttl_s: float) -> bool:
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        return bool(await call_redis(self._acquire(keys=[self._slot_key(key)], args=[limit, ttl_ms])))

    async def release(self, key: str) -> None:
        await call_redis(self._release(keys=[self._slot_key(key)]))

    async def close(self) -> None:
        # Closing only drops sockets; it must not raise when Redis is gone.
        try:
            await call_redis(self._redis.aclose())
        except BackendUnavailable:
            pass


# --- failover --------------------------------------------------------------------------------------------------


class Failover:
    """Routes calls to a primary backend, or to a fallback while the primary is unreachable.

    The first BackendUnavailable logs `down_message` once (at WARNING) and routes every call to the fallback for
    `retry_after_s`; then one call at a time probes the primary while the others keep using the fallback. The
    first success logs `up_message` once (at INFO). Only BackendUnavailable triggers it; other errors propagate.
    """

    def __init__(
        self,
        down_message: str,
        up_message: str,
        *,
        retry_after_s: float = 5.0,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._down_message = down_message
        self._up_message = up_message
        self._retry_after_s = retry_after_s
        self._log = logger
        self._clock = clock
        self._down = False
        self._retry_at = 0.0
        self._probing = False

    @property
    def degraded(self) -> bool:
        """True while calls go to the fallback."""
        return self._down

    async def call(self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        if self._down and (self._probing or self._clock() < self._retry_at):
            return await fallback()
        probe = self._down
        self._probing = self._probing or probe
        try:
            result = await primary()
        except BackendUnavailable as exc:
            if not self._down:
                self._log.warning("%s (%s)", self._down_message, exc)
            self._down = True
            self._retry_at = self._clock() + self._retry_after_s
            return await fallback()
        finally:
            if probe:
                self._probing = False
        if self._down:
            self._down = False
            self._log.info("%s", self._up_message)
        return result


async def _nothing() -> None:
    return None


class FallbackCounters:
    """Counters on `primary` (Redis), on `fallback` (this process's) while the primary is unreachable. Never
    raises because of Redis.

    It remembers what the fallback granted, so a refund or release reaches the backend that counted the hit or
    the slot, even when Redis came back or went away in between. A refund or release owed to an unreachable
    primary is dropped: its window or slot TTL expires it there.
    """

    def __init__(
        self,
        primary: Counters,
        fallback: Counters,
        *,
        retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        where = redacted_url(primary.url) if isinstance(primary, RedisCounters) else type(primary).__name__
        self._failover = Failover(
            f"Redis at {where} is unreachable; rate limits fall back to this process's counters until it answers again",
            f"Redis at {where} answers again; rate limits are shared again",
            retry_after_s=retry_after_s,
            clock=clock,
        )
        # What the fallback holds: reserved cost per (key, window_s, window) and slots per key.
        self._fallback_hits: dict[tuple[str, float, int], int] = {}
        self._fallback_slots: dict[str, int] = {}
        self._next_prune = 0.0

    @property
    def degraded(self) -> bool:
        """True while the fallback serves."""
        return self._failover.degraded

    def _prune_hits(self) -> None:
        now = time.time()  # windows are wall-clock, like the counters' own
        if now < self._next_prune:
            return
        self._next_prune = now + 1.0
        self._fallback_hits = {k: v for k, v in self._fallback_hits.items() if (k[2] + 1) * k[1] > now}

    async def hit(self, key: str, cost: int, limit: int, window_s: float) -> Decision:
        async def on_fallback() -> Decision:
            decision = await self._fallback.hit(key, cost, limit, window_s)
            if decision.allowed and cost:
                self._prune_hits()
                wkey = (key, window_s, decision.window)
                self._fallback_hits[wkey] = self._fallback_hits.get(wkey, 0) + cost
            return decision

        return await self._failover.call(lambda: self._primary.hit(key, cost, limit, window_s), on_fallback)

    async def refund(self, key: str, amount: int, window_s: float, window: int) -> None:
        wkey = (key, window_s, window)
        on_fallback = min(amount, self._fallback_hits.get(wkey, 0))
        if on_fallback > 0:
            self._fallback_hits[wkey] -= on_fallback
            amount -= on_fallback
            await self._fallback.refund(key, on_fallback, window_s, window)
        if amount > 0:
            await self._failover.call(lambda: self._primary.refund(key, amount, window_s, window), _nothing)

    async def acquire(self, key: str, limit: int, ttl_s: float) -> bool:
        async def on_fallback() -> bool:
            ok = await self._fallback.acquire(key, limit, ttl_s)
            if ok:
                self._fallback_slots[key] = self._fallback_slots.get(key, 0) + 1
            return ok

        return await self._failover.call(lambda: self._primary.acquire(key, limit, ttl_s), on_fallback)

    async def release(self, key: str) -> None:
        held = self._fallback_slots.get(key, 0)
        if held > 0:
            if held == 1:
                del self._fallback_slots[key]
            else:
                self._fallback_slots[key] = held - 1
            await self._fallback.release(key)
            return
        await self._failover.call(lambda: self._primary.release(key), _nothing)

    async def close(self) -> None:
        try:
            await self._primary.close()
        finally:
            await self._fallback.close()
