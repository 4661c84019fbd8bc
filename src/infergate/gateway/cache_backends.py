"""Byte stores for the result cache, and the cache key.

`InMemoryCache` (this process, LRU bounded by entries and bytes, per-entry TTL), `RedisCache` (shared by every
gateway process) and `FallbackCache` (Redis, or this process's memory while Redis is unreachable). Values are
opaque bytes: what to store and how to replay it is the gateway's business.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from infergate.gateway.counters import BackendUnavailable, Failover, call_redis, connect_redis, redacted_url

__all__ = ["CacheBackend", "FallbackCache", "InMemoryCache", "RedisCache", "cache_key"]

log = logging.getLogger(__name__)


class CacheBackend(Protocol):
    """A byte store with per-entry expiry. A miss, an expired entry or an evicted one all read as None."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store `value` for `ttl_s` seconds (ttl_s <= 0 stores nothing). Best effort: a store may evict it."""
        ...

    async def close(self) -> None: ...


def _to_json(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)  # sets have no order; sort so equal sets give one key
    raise TypeError(f"cache_key cannot encode {type(obj).__name__}")


def cache_key(*parts: object) -> str:
    """The sha256 (hex) of a canonical JSON of `parts`: sorted keys, no whitespace, dataclasses as dicts
    (dataclasses.asdict), tuples as lists. Equal parts give equal keys whatever their dict order.

    Raises TypeError for a value JSON cannot represent."""
    text = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_to_json)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class InMemoryCache:
    """An LRU of this process, bounded by `max_entries` and by `max_bytes` (the sum of the values' sizes). A
    value larger than `max_bytes` is not stored. Expired entries are dropped when read or evicted. One event
    loop only (no operation awaits, so each is atomic there)."""

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("max_entries and max_bytes must be >= 0")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # least recently used first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Total size of the stored values."""
        return self._bytes

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(value)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if key in self._entries:
            self._drop(key)  # the old value is stale even if the new one is not stored
        size = len(value)
        if ttl_s <= 0 or size > self._max_bytes or self._max_entries == 0:
            return
        now = self._clock()
        self._entries[key] = (value, now + ttl_s)
        self._bytes += size
        # Evict expired entries first (they are dead weight), then least recently used ones.
        if len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            for k in [k for k, (_, expires) in self._entries.items() if expires <= now]:
                self._drop(k)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0


class RedisCache:
    """Values in Redis under `prefix` + key, expiring with SET PX; shared by every process using the same URL and
    prefix. Size is bounded by Redis's own maxmemory policy. Raises BackendUnavailable when Redis does not
    answer in time."""

    def __init__(self, url: str, prefix: str = "infergate:cache:") -> None:
        self.url = url
        self._prefix = prefix
        self._redis = connect_redis(url)

    async def get(self, key: str) -> bytes | None:
        value = await call_redis(self._redis.get(self._prefix + key))
        # The client never decodes (decode_responses=False), so a value is bytes.
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        await call_redis(self._redis.set(self._prefix + key, value, px=max(1, math.ceil(ttl_s * 1000))))

    async def close(self) -> None:
        try:
            await call_redis(self._redis.aclose())
        except BackendUnavailable:
            pass


class FallbackCache:
    """The cache on `primary` (Redis), on `fallback` (this process's memory) while the primary is unreachable.
    Never raises because of Redis: it logs one warning when Redis goes away and one line when it is back."""

    def __init__(self, primary: CacheBackend, fallback: CacheBackend, *, retry_after_s: float = 5.0) -> None:
        self._primary = primary
        self._fallback = fallback
        where = redacted_url(primary.url) if isinstance(primary, RedisCache) else type(primary).__name__
        self._failover = Failover(
            f"Redis at {where} is unreachable; the result cache falls back to this process's memory "
            "until it answers again",
            f"Redis at {where} answers again; the result cache is shared again",
            retry_after_s=retry_after_s,
            logger=log,
        )

    @property
    def degraded(self) -> bool:
        """True while the fallback serves."""
        return self._failover.degraded

    async def get(self, key: str) -> bytes | None:
        return await self._failover.call(lambda: self._primary.get(key), lambda: self._fallback.get(key))

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._failover.call(
            lambda: self._primary.set(key, value, ttl_s), lambda: self._fallback.set(key, value, ttl_s)
        )

    async def close(self) -> None:
        try:
            await self._primary.close()
        finally:
            await self._fallback.close()
