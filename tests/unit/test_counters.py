"""Rate-limit counters: exact under concurrency, in this process and in the real Redis (127.0.0.1:6379), and the
fallback to in-process counters when Redis hangs, refuses or comes back."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

import pytest
import redis

from infergate.gateway.counters import (
    BackendUnavailable,
    Counters,
    Decision,
    FallbackCounters,
    InMemoryCounters,
    RedisCounters,
)
from tests.support.redis_helpers import REDIS_URL, opened

HOUR = 3600.0  # a window long enough that a test never sees it roll over (unless it starts at its very end)
LOGGER = "infergate.gateway.counters"


def _count_keys(prefix: str) -> int:
    with redis.Redis.from_url(REDIS_URL) as r:
        return len(list(r.scan_iter(match=prefix + "*", count=1000)))


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest, prefix: str) -> Callable[[], Counters]:
    """Makes counters of one kind; Redis ones share this test's prefix (like gateway processes share Redis)."""
    if request.param == "memory":
        return InMemoryCounters
    return lambda: RedisCounters(REDIS_URL, prefix=prefix)


async def _next_window(window_s: float) -> None:
    """Sleep into the next window (wall clock, like the counters), a little past its start."""
    now = time.time()
    await asyncio.sleep((math.floor(now / window_s) + 1) * window_s - now + 0.05)


# --- one backend -----------------------------------------------------------------------------------------------


def test_hit_counts_down_and_refuses_at_the_limit(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            decisions = [await c.hit("user", 1, 3, HOUR) for _ in range(4)]
            assert [d.allowed for d in decisions] == [True, True, True, False]
            assert [d.remaining for d in decisions] == [2, 1, 0, 0]
            assert all(d.limit == 3 for d in decisions)
            assert len({d.window for d in decisions}) == 1

    asyncio.run(main())


def test_concurrent_hits_allow_exactly_what_remains(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            assert (await c.hit("user", 5, 10, HOUR)).remaining == 5
            decisions = await asyncio.gather(*(c.hit("user", 1, 10, HOUR) for _ in range(12)))
            allowed = [d for d in decisions if d.allowed]
            assert len(allowed) == 5
            assert sorted(d.remaining for d in allowed) == [0, 1, 2, 3, 4]
            assert all(d.remaining == 0 for d in decisions if not d.allowed)

    asyncio.run(main())


def test_concurrent_token_reservations_never_overrun(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            decisions = await asyncio.gather(*(c.hit("tokens", 7, 100, HOUR) for _ in range(50)))
            assert sum(d.allowed for d in decisions) == 14  # 14 * 7 = 98 <= 100 < 15 * 7
            assert (await c.hit("tokens", 0, 100, HOUR)).remaining == 2

    asyncio.run(main())


def test_cost_is_all_or_nothing(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            assert (await c.hit("k", 8, 10, HOUR)).remaining == 2
            refused = await c.hit("k", 3, 10, HOUR)
            assert not refused.allowed and refused.remaining == 2  # nothing was added
            peek = await c.hit("k", 0, 10, HOUR)
            assert peek.allowed and peek.remaining == 2
            assert (await c.hit("k", 2, 10, HOUR)).remaining == 0
            assert not (await c.hit("k", 11, 10, HOUR)).allowed  # larger than the limit: never allowed

    asyncio.run(main())


def test_keys_and_window_lengths_are_independent(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            assert (await c.hit("a", 5, 5, HOUR)).allowed
            assert not (await c.hit("a", 1, 5, HOUR)).allowed
            assert (await c.hit("b", 5, 5, HOUR)).allowed
            assert (await c.hit("a", 5, 5, 2 * HOUR)).allowed

    asyncio.run(main())


def test_invalid_arguments_raise(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            for cost, limit, window_s in [(-1, 5, HOUR), (1, -5, HOUR), (1, 5, 0.0)]:
                with pytest.raises(ValueError):
                    await c.hit("k", cost, limit, window_s)

    asyncio.run(main())


def test_refund_gives_back_in_the_same_window_never_below_zero(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            reserved = await c.hit("tokens", 10, 10, HOUR)  # reserve max_new_tokens ...
            await c.refund("tokens", 4, HOUR, reserved.window)  # ... and settle the 6 really generated
            assert (await c.hit("tokens", 0, 10, HOUR)).remaining == 4
            assert not (await c.hit("tokens", 5, 10, HOUR)).allowed
            await c.refund("tokens", 100, HOUR, reserved.window)  # more than was used: floors at 0
            full = await c.hit("tokens", 10, 10, HOUR)
            assert full.allowed and full.remaining == 0
            await c.refund("unknown", 5, HOUR, reserved.window)  # nothing to refund: no error, nothing created
            assert (await c.hit("unknown", 0, 10, HOUR)).remaining == 10

    asyncio.run(main())


def test_refund_for_a_window_that_is_over_is_a_noop(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            await _next_window(1.0)
            old = await c.hit("tokens", 5, 5, 1.0)
            await _next_window(1.0)
            new = await c.hit("tokens", 5, 5, 1.0)
            assert new.allowed and new.window == old.window + 1
            await c.refund("tokens", 5, 1.0, old.window)
            assert not (await c.hit("tokens", 1, 5, 1.0)).allowed  # the new window was not refunded

    asyncio.run(main())


def test_reset_s_is_within_the_window(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            for window_s in (0.25, 1.0, 60.0, HOUR, 86400.0):
                before = time.time()
                d = await c.hit(f"k{window_s}", 1, 5, window_s)
                assert 0 < d.reset_s <= window_s
                # Redis uses its own clock; it is the same machine here, so the window agrees within one.
                assert abs(d.window - math.floor(before / window_s)) <= 1

    asyncio.run(main())


def test_windows_roll_over(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            await _next_window(1.0)
            first = [await c.hit("k", 1, 2, 1.0) for _ in range(3)]
            assert [d.allowed for d in first] == [True, True, False]
            await asyncio.sleep(first[-1].reset_s + 0.05)
            later = await c.hit("k", 1, 2, 1.0)
            assert later.allowed and later.remaining == 1
            assert later.window == first[0].window + 1

    asyncio.run(main())


def test_acquire_and_release_slots(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            assert [await c.acquire("u", 2, 60) for _ in range(3)] == [True, True, False]
            await c.release("u")
            assert await c.acquire("u", 2, 60)
            assert not await c.acquire("u", 2, 60)
            for _ in range(5):  # more releases than acquires: the count stops at 0
                await c.release("u")
            assert [await c.acquire("u", 1, 60) for _ in range(2)] == [True, False]
            assert await c.acquire("other", 1, 60)

    asyncio.run(main())


def test_concurrent_acquires_are_exact(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            got = await asyncio.gather(*(c.acquire("u", 3, 60) for _ in range(20)))
            assert sum(got) == 3

    asyncio.run(main())


def test_slots_expire_after_the_ttl(make: Callable[[], Counters]) -> None:
    async def main() -> None:
        async with opened(make()) as c:
            assert await c.acquire("u", 1, 0.3)  # the holder "crashes" and never releases
            assert not await c.acquire("u", 1, 0.3)
            await asyncio.sleep(0.4)
            assert await c.acquire("u", 1, 0.3)

    asyncio.run(main())


def test_in_memory_counters_prune_old_windows_and_slots() -> None:
    now = [1000.0]
    c = InMemoryCounters(clock=lambda: now[0])

    async def main() -> None:
        for i in range(100):
            await c.hit(f"k{i}", 1, 5, 1.0)
        await c.acquire("slot", 1, 0.5)
        assert len(c) == 101
        now[0] += 2.0
        await c.hit("fresh", 1, 5, 1.0)
        assert len(c) == 1

    asyncio.run(main())


# --- two gateway processes -------------------------------------------------------------------------------------


def test_two_redis_counters_share_one_limit_exactly(prefix: str) -> None:
    async def main() -> None:
        async with (
            opened(RedisCounters(REDIS_URL, prefix=prefix)) as a,
            opened(RedisCounters(REDIS_URL, prefix=prefix)) as b,
        ):
            decisions = await asyncio.gather(*((a if i % 2 else b).hit("user", 1, 5, HOUR) for i in range(12)))
            assert sum(d.allowed for d in decisions) == 5
            tokens = await asyncio.gather(*((a if i % 2 else b).hit("tok", 7, 100, HOUR) for i in range(50)))
            assert sum(d.allowed for d in tokens) == 14
            window = tokens[0].window
            await a.refund("tok", 8, HOUR, window)  # a refund by one process frees room for the other
            assert (await b.hit("tok", 10, 100, HOUR)).allowed
            slots = await asyncio.gather(*((a if i % 2 else b).acquire("u", 2, 60) for i in range(6)))
            assert sum(slots) == 2
            await a.release("u")
            assert await b.acquire("u", 2, 60)

    asyncio.run(main())


def test_redis_keys_expire_with_their_window(prefix: str) -> None:
    async def main() -> None:
        async with opened(RedisCounters(REDIS_URL, prefix=prefix)) as c:
            await c.hit("k", 1, 5, 0.3)
            await c.acquire("s", 1, 0.3)
            assert _count_keys(prefix) == 2
            await asyncio.sleep(0.45)
            assert _count_keys(prefix) == 0

    asyncio.run(main())


# --- the fallback ----------------------------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


async def _timed(op: Awaitable[object]) -> float:
    start = time.monotonic()
    await op
    return time.monotonic() - start


@pytest.mark.parametrize("where", ["hanging", "closed"])
def test_fallback_serves_quickly_and_exactly_when_redis_is_unreachable(
    where: str, hanging_url: str, closed_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = hanging_url if where == "hanging" else closed_url

    async def main() -> None:
        c = FallbackCounters(RedisCounters(url, prefix="infergate-test:"), InMemoryCounters(), retry_after_s=60)
        async with opened(c):
            results: list[object] = []
            ops: list[Callable[[], Awaitable[object]]] = [
                lambda: c.hit("u", 1, 3, HOUR),
                lambda: c.hit("u", 1, 3, HOUR),
                lambda: c.hit("u", 1, 3, HOUR),
                lambda: c.hit("u", 1, 3, HOUR),
                lambda: c.acquire("s", 1, 60),
                lambda: c.acquire("s", 1, 60),
                lambda: c.release("s"),
                lambda: c.acquire("s", 1, 60),
            ]
            for op in ops:
                start = time.monotonic()
                results.append(await op())
                assert time.monotonic() - start < 1.5
            hits = results[:4]
            assert [d.allowed for d in hits if isinstance(d, Decision)] == [True, True, True, False]
            assert results[4:] == [True, False, None, True]
            refund_from = hits[2]
            assert isinstance(refund_from, Decision)
            await c.refund("u", 1, HOUR, refund_from.window)
            assert (await c.hit("u", 1, 3, HOUR)).allowed
            assert c.degraded

    asyncio.run(main())
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "is unreachable; rate limits fall back to this process's counters until it answers again" in warnings[0]


def test_fallback_under_concurrency_warns_once_and_stays_exact(
    hanging_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def main() -> None:
        c = FallbackCounters(RedisCounters(hanging_url), InMemoryCounters(), retry_after_s=60)
        async with opened(c):
            start = time.monotonic()
            decisions = await asyncio.gather(*(c.hit("u", 1, 5, HOUR) for _ in range(12)))
            assert time.monotonic() - start < 1.5  # the calls waited together, not one after another
            assert sum(d.allowed for d in decisions) == 5

    asyncio.run(main())
    assert len(_warnings(caplog)) == 1


def test_fallback_never_logs_the_redis_password(closed_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = closed_url.replace("redis://", "redis://user:s3cret-pw@")

    async def main() -> None:
        async with opened(FallbackCounters(RedisCounters(url), InMemoryCounters())) as c:
            assert (await c.hit("u", 1, 3, HOUR)).allowed

    asyncio.run(main())
    assert len(_warnings(caplog)) == 1
    assert "s3cret-pw" not in caplog.text and "127.0.0.1" in caplog.text


def test_fallback_lets_other_errors_through(closed_url: str) -> None:
    async def main() -> None:
        async with opened(FallbackCounters(RedisCounters(closed_url), InMemoryCounters())) as c:
            with pytest.raises(ValueError):
                await c.hit("u", -1, 3, HOUR)

    asyncio.run(main())


class _Proxy:
    """A TCP proxy in front of the real Redis that can be switched between hanging (accept, never answer) and
    forwarding: a Redis that stops answering, then answers again."""

    def __init__(self) -> None:
        self.forward = False
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            if not self.forward:
                await reader.read()  # hang until the client gives up and closes
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
            self._writers.append(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)
        await self._server.wait_closed()


def test_fallback_recovers_when_redis_answers_again(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def main() -> None:
        proxy = _Proxy()
        url = await proxy.start()
        fallback = InMemoryCounters()
        c = FallbackCounters(RedisCounters(url, prefix=prefix), fallback, retry_after_s=0.3)
        try:
            async with opened(RedisCounters(REDIS_URL, prefix=prefix)) as direct:
                # Redis hangs: the fallback counts; a reservation and a slot are granted there.
                reserved = await c.hit("tok", 50, 100, HOUR)
                assert reserved.allowed and c.degraded
                assert await c.acquire("slot", 1, 60)
                # Before retry_after_s, calls go straight to the fallback without waiting on Redis.
                assert await _timed(c.hit("req", 1, 10, HOUR)) < 0.1

                proxy.forward = True
                await asyncio.sleep(0.4)
                shared = await c.hit("req", 1, 10, HOUR)  # this call probes Redis, which answers
                assert not c.degraded
                assert shared.remaining == 9  # counted in Redis, not on top of the fallback's count
                assert (await direct.hit("req", 0, 10, HOUR)).remaining == 9

                # The reservation and the slot granted by the fallback are settled there, not in Redis.
                await c.refund("tok", 30, HOUR, reserved.window)
                assert (await fallback.hit("tok", 0, 100, HOUR)).remaining == 80
                assert (await direct.hit("tok", 0, 100, HOUR)).remaining == 100
                await c.release("slot")
                assert await fallback.acquire("slot", 1, 60)
                assert await c.acquire("slot", 1, 60)  # counted in Redis now
                assert not await direct.acquire("slot", 1, 60)
        finally:
            await c.close()
            await proxy.close()

    asyncio.run(main())
    assert len(_warnings(caplog)) == 1
    infos = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    assert len(infos) == 1 and "answers again" in infos[0]


def test_failover_probes_one_call_at_a_time() -> None:
    """While the retry probe waits on the primary, the other calls keep using the fallback."""

    class Slow(InMemoryCounters):
        calls = 0

        async def hit(self, key: str, cost: int, limit: int, window_s: float) -> Decision:
            Slow.calls += 1
            await asyncio.sleep(0.2)
            raise BackendUnavailable("slow and broken")

    async def main() -> None:
        c = FallbackCounters(Slow(), InMemoryCounters(), retry_after_s=0.0)
        async with opened(c):
            await c.hit("u", 1, 100, HOUR)  # first failure
            assert Slow.calls == 1
            await asyncio.gather(*(c.hit("u", 1, 100, HOUR) for _ in range(10)))
            assert Slow.calls == 2  # one probe, not ten

    asyncio.run(main())
