"""Byte stores for the result cache: an LRU in this process, or Redis shared by every gateway process."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections import OrderedDict
from typing import Any, Protocol

from infergate.gateway.counters import Fallback, redis_client

__all__ = ["CacheBackend", "FallbackCache", "InMemoryCache", "RedisCache", "cache_key"]


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...
    async def close(self) -> None: ...


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot key on {type(value).__name__}")


def cache_key(*parts: object) -> str:
    """SHA-256 of the parts' canonical JSON (sorted keys, no spaces): equal requests give equal keys."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_plain, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class InMemoryCache:
    """LRU bounded by entry count and total bytes, each entry with its own expiry."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if len(value) > self._max_bytes or self._max_entries == 0:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._bytes += len(value)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0


class RedisCache:
    def __init__(self, url: str, prefix: str = "infergate:cache:") -> None:
        self.url = url
        self._prefix = prefix
        self._redis = redis_client(url)

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self._prefix + key)
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.set(self._prefix + key, value, px=max(1, math.ceil(ttl_s * 1000)))

    async def close(self) -> None:
        await self._redis.aclose()


class FallbackCache:
    def __init__(self, primary: RedisCache, fallback: InMemoryCache, retry_after_s: float = 5.0) -> None:
        self._primary = primary
        self._fallback = fallback
        self._guard = Fallback("cached results", primary.url, retry_after_s)

    async def get(self, key: str) -> bytes | None:
        return await self._guard.call(lambda: self._primary.get(key), lambda: self._fallback.get(key))

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._guard.call(
            lambda: self._primary.set(key, value, ttl_s), lambda: self._fallback.set(key, value, ttl_s)
        )

    async def close(self) -> None:
        await self._primary.close()
        await self._fallback.close()
