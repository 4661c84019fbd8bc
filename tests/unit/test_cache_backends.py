"""Result-cache byte stores (in this process and in the real Redis at 127.0.0.1:6379), the fallback when Redis
hangs or refuses, and the cache key."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

import pytest
import redis

from infergate.gateway.cache_backends import CacheBackend, FallbackCache, InMemoryCache, RedisCache, cache_key
from infergate.gateway.counters import BackendUnavailable
from tests.support.redis_helpers import REDIS_URL, opened

LOGGER = "infergate.gateway.cache_backends"


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest, prefix: str) -> Callable[[], CacheBackend]:
    if request.param == "memory":
        return lambda: InMemoryCache(max_entries=100, max_bytes=1 << 20)
    return lambda: RedisCache(REDIS_URL, prefix=prefix)


# --- one backend -----------------------------------------------------------------------------------------------


def test_get_and_set(make: Callable[[], CacheBackend]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            assert await c.get("k") is None
            await c.set("k", b"first", 60)
            assert await c.get("k") == b"first"
            await c.set("k", b"second", 60)
            assert await c.get("k") == b"second"
            binary = bytes(range(256))  # values are opaque bytes, not text
            await c.set("bin", binary, 60)
            assert await c.get("bin") == binary
            await c.set("empty", b"", 60)
            assert await c.get("empty") == b""

    asyncio.run(main())


def test_entries_expire_after_their_ttl(make: Callable[[], CacheBackend]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            await c.set("short", b"v", 0.2)
            await c.set("long", b"v", 60)
            await c.set("never", b"v", 0)  # a ttl of 0 stores nothing
            assert await c.get("short") == b"v"
            assert await c.get("never") is None
            await asyncio.sleep(0.3)
            assert await c.get("short") is None
            assert await c.get("long") == b"v"

    asyncio.run(main())


def test_lru_evicts_least_recently_used_by_count() -> None:
    async def main() -> None:
        c = InMemoryCache(max_entries=3, max_bytes=1000)
        for k in "abc":
            await c.set(k, k.encode(), 60)
        assert await c.get("a") == b"a"  # now b is the least recently used
        await c.set("d", b"d", 60)
        assert [await c.get(k) for k in "abcd"] == [b"a", None, b"c", b"d"]
        assert len(c) == 3

    asyncio.run(main())


def test_lru_evicts_by_total_bytes() -> None:
    async def main() -> None:
        c = InMemoryCache(max_entries=100, max_bytes=10)
        await c.set("a", b"aaaa", 60)
        await c.set("b", b"bbbb", 60)
        assert await c.get("a") == b"aaaa"
        await c.set("c", b"cccc", 60)  # 12 bytes > 10: b, the least recently used, goes
        assert await c.get("b") is None
        assert await c.get("a") == b"aaaa" and await c.get("c") == b"cccc"
        assert c.nbytes == 8
        await c.set("big", b"x" * 10, 60)  # exactly max_bytes fits, alone
        assert len(c) == 1 and c.nbytes == 10

    asyncio.run(main())


def test_oversize_values_are_not_stored() -> None:
    async def main() -> None:
        c = InMemoryCache(max_entries=100, max_bytes=10)
        await c.set("small", b"12345", 60)
        await c.set("huge", b"x" * 11, 60)
        assert await c.get("huge") is None
        assert await c.get("small") == b"12345"  # nothing was evicted for it
        await c.set("small", b"y" * 11, 60)  # the old value is stale: gone, not kept
        assert await c.get("small") is None
        assert len(c) == 0 and c.nbytes == 0

    asyncio.run(main())


def test_expired_entries_are_evicted_before_live_ones() -> None:
    now = [0.0]

    async def main() -> None:
        c = InMemoryCache(max_entries=2, max_bytes=1000, clock=lambda: now[0])
        await c.set("live", b"1", 60)
        await c.set("dying", b"2", 1)
        now[0] = 2.0
        await c.set("new", b"3", 60)
        assert await c.get("live") == b"1" and await c.get("new") == b"3"

    asyncio.run(main())


def test_redis_cache_is_shared_between_instances(prefix: str) -> None:
    async def main() -> None:
        async with (
            opened(RedisCache(REDIS_URL, prefix=prefix)) as a,
            opened(RedisCache(REDIS_URL, prefix=prefix)) as b,
            opened(RedisCache(REDIS_URL, prefix=prefix + "other:")) as other,
        ):
            await a.set("k", b"from a", 60)
            assert await b.get("k") == b"from a"
            assert await other.get("k") is None  # prefixes keep caches apart

    asyncio.run(main())
    with redis.Redis.from_url(REDIS_URL) as r:
        assert 0 < r.pttl(prefix + "k") <= 60_000  # stored with an expiry (SET PX)


# --- the fallback ----------------------------------------------------------------------------------------------


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


@pytest.mark.parametrize("where", ["hanging", "closed"])
def test_fallback_cache_serves_from_memory_when_redis_is_unreachable(
    where: str, hanging_url: str, closed_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = hanging_url if where == "hanging" else closed_url

    async def main() -> None:
        c = FallbackCache(RedisCache(url), InMemoryCache(100, 1 << 20), retry_after_s=60)
        async with opened(c):
            for step in range(4):
                start = time.monotonic()
                await c.set(f"k{step}", b"v%d" % step, 60)
                assert await c.get(f"k{step}") == b"v%d" % step
                assert await c.get("missing") is None
                assert time.monotonic() - start < 1.5

    asyncio.run(main())
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "is unreachable; the result cache falls back to this process's memory" in warnings[0]


def test_fallback_cache_uses_redis_while_it_answers(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def main() -> None:
        memory = InMemoryCache(100, 1 << 20)
        async with (
            opened(FallbackCache(RedisCache(REDIS_URL, prefix=prefix), memory)) as c,
            opened(RedisCache(REDIS_URL, prefix=prefix)) as direct,
        ):
            await c.set("k", b"shared", 60)
            assert await direct.get("k") == b"shared"
            assert await memory.get("k") is None

    asyncio.run(main())
    assert not _records(caplog, logging.WARNING)


class _Flaky(InMemoryCache):
    """A primary that can be switched off (raises BackendUnavailable, as RedisCache does)."""

    def __init__(self) -> None:
        super().__init__(100, 1 << 20)
        self.up = False

    async def get(self, key: str) -> bytes | None:
        if not self.up:
            raise BackendUnavailable("down")
        return await super().get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if not self.up:
            raise BackendUnavailable("down")
        await super().set(key, value, ttl_s)


def test_fallback_cache_recovers_and_logs_once_each_way(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def main() -> None:
        primary, memory = _Flaky(), InMemoryCache(100, 1 << 20)
        async with opened(FallbackCache(primary, memory, retry_after_s=0.2)) as c:
            for _ in range(3):
                await c.set("k", b"during", 60)
            assert await c.get("k") == b"during" and c.degraded
            primary.up = True
            assert await c.get("k") == b"during"  # before retry_after_s: still the fallback
            await asyncio.sleep(0.25)
            await c.set("k", b"after", 60)
            assert not c.degraded
            assert await primary.get("k") == b"after"
            assert await memory.get("k") == b"during"

    asyncio.run(main())
    assert len(_records(caplog, logging.WARNING)) == 1
    infos = _records(caplog, logging.INFO)
    assert len(infos) == 1 and "answers again" in infos[0]


# --- the key ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Params:
    temperature: float
    stop: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Request:
    prompt: str
    params: _Params


def test_cache_key_is_stable_and_canonical() -> None:
    a = cache_key("model", "text-generation", {"inputs": "hi", "parameters": {"top_k": 5, "temperature": 0.5}})
    b = cache_key("model", "text-generation", {"parameters": {"temperature": 0.5, "top_k": 5}, "inputs": "hi"})
    assert a == b
    assert len(a) == 64 and int(a, 16) >= 0  # sha256, hex
    assert cache_key("m", ("a", "b")) == cache_key("m", ["a", "b"])  # tuples as lists
    request = _Request("hi", _Params(0.5, ("\n",)))
    assert cache_key(request) == cache_key({"params": {"stop": ["\n"], "temperature": 0.5}, "prompt": "hi"})
    assert cache_key(request) == cache_key(_Request("hi", _Params(0.5, ("\n",))))


def test_cache_key_differs_when_anything_differs() -> None:
    base = cache_key("model", "text-generation", {"inputs": "hi", "parameters": {"temperature": 0.5}})
    others = [
        cache_key("other", "text-generation", {"inputs": "hi", "parameters": {"temperature": 0.5}}),
        cache_key("model", "summarization", {"inputs": "hi", "parameters": {"temperature": 0.5}}),
        cache_key("model", "text-generation", {"inputs": "hi!", "parameters": {"temperature": 0.5}}),
        cache_key("model", "text-generation", {"inputs": "hi", "parameters": {"temperature": 0.6}}),
        cache_key("model", "text-generation", {"inputs": "hi", "parameters": {}}),
        cache_key("model", "text-generation"),
        cache_key("model", "text-generation", {"inputs": "hi", "parameters": {"temperature": 0.5}}, None),
    ]
    assert len({base, *others}) == len(others) + 1
    assert cache_key("ab", "c") != cache_key("a", "bc")  # parts are delimited, not concatenated
    assert cache_key(_Request("hi", _Params(0.5, ()))) != cache_key(_Request("hi", _Params(0.7, ())))


def test_cache_key_rejects_values_json_cannot_represent() -> None:
    with pytest.raises(TypeError):
        cache_key(object())
    with pytest.raises(TypeError):
        cache_key(_Request)  # a dataclass type, not an instance
