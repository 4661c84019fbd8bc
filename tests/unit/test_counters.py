"""Rate-limit counters and cache backends, in this process and in the real Redis (127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from infergate.gateway.cache_backends import InMemoryCache, RedisCache, cache_key
from infergate.gateway.counters import Counters, InMemoryCounters, RedisCounters

REDIS = "redis://127.0.0.1:6379/0"


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(fn())  # type: ignore[arg-type]


def make(kind: str) -> Counters:
    return InMemoryCounters() if kind == "memory" else RedisCounters(REDIS)


@pytest.fixture
def key() -> str:
    return f"infergate-unit-{secrets.token_hex(6)}"


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_concurrent_hits_against_a_limit_are_exact(kind: str, key: str) -> None:
    async def go() -> tuple[int, int]:
        counters = make(kind)
        try:
            requests = await asyncio.gather(*(counters.hit(f"{key}:r", 1, 5, 60) for _ in range(12)))
            tokens = await asyncio.gather(*(counters.hit(f"{key}:t", 7, 100, 60) for _ in range(50)))
            return sum(d.allowed for d in requests), sum(d.allowed for d in tokens)
        finally:
            await counters.close()

    assert run(go) == (5, 14)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_refund_settles_a_reservation_in_its_window(kind: str, key: str) -> None:
    async def go() -> list[int]:
        counters = make(kind)
        try:
            first = await counters.hit(key, 8, 10, 60)
            assert first.allowed and first.remaining == 2 and 0 < first.reset_s <= 60
            assert not (await counters.hit(key, 5, 10, 60)).allowed  # all or nothing
            await counters.refund(key, 6, 60, first.window)
            after = await counters.hit(key, 5, 10, 60)
            return [after.allowed, after.remaining]
        finally:
            await counters.close()

    assert run(go) == [True, 3]


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_windows_roll_over(kind: str, key: str) -> None:
    async def go() -> bool:
        counters = make(kind)
        try:
            assert (await counters.hit(key, 1, 1, 1.0)).allowed
            assert not (await counters.hit(key, 1, 1, 1.0)).allowed
            await asyncio.sleep(1.05)
            return (await counters.hit(key, 1, 1, 1.0)).allowed
        finally:
            await counters.close()

    assert run(go)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_concurrency_slots(kind: str, key: str) -> None:
    async def go() -> list[bool]:
        counters = make(kind)
        try:
            got = [await counters.acquire(key, 2, 60) for _ in range(3)]
            await counters.release(key)
            got.append(await counters.acquire(key, 2, 60))
            return got
        finally:
            await counters.close()

    assert run(go) == [True, True, False, True]


def test_two_redis_clients_share_one_limit(key: str) -> None:
    async def go() -> int:
        a, b = RedisCounters(REDIS), RedisCounters(REDIS)
        try:
            hits = await asyncio.gather(*((a if i % 2 else b).hit(key, 1, 6, 60) for i in range(12)))
            return sum(d.allowed for d in hits)
        finally:
            await a.close()
            await b.close()

    assert run(go) == 6


def test_in_memory_cache_is_lru_bounded_by_count_bytes_and_time() -> None:
    async def go() -> None:
        cache = InMemoryCache(max_entries=2, max_bytes=10)
        await cache.set("a", b"1234", 60)
        await cache.set("b", b"5678", 60)
        assert await cache.get("a") == b"1234"  # a is now the most recent
        await cache.set("c", b"90", 60)  # evicts b, the least recent
        assert await cache.get("b") is None and await cache.get("c") == b"90"
        await cache.set("big", b"x" * 11, 60)  # larger than the whole cache: not stored
        assert await cache.get("big") is None
        await cache.set("short", b"1", 0.05)
        time.sleep(0.06)
        assert await cache.get("short") is None

    run(go)


def test_redis_cache_round_trip_and_shared(key: str) -> None:
    async def go() -> bytes | None:
        a, b = RedisCache(REDIS, prefix=f"{key}:"), RedisCache(REDIS, prefix=f"{key}:")
        try:
            await a.set("k", b"value", 5)
            return await b.get("k")
        finally:
            await a.close()
            await b.close()

    assert run(go) == b"value"


def test_cache_key_is_canonical() -> None:
    assert cache_key("m", {"a": 1, "b": [1, 2]}) == cache_key("m", {"b": [1, 2], "a": 1})
    assert cache_key("m", {"a": 1}) != cache_key("m", {"a": 2})
