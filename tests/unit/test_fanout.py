"""merge(): several async streams as one, tagged by index; errors and early exits close every stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from infergate.gateway.fanout import merge


async def items(values: list[str], closed: list[int], index: int) -> AsyncGenerator[str, None]:
    try:
        for v in values:
            await asyncio.sleep(0)
            yield v
    finally:
        closed.append(index)


async def endless(closed: list[int], index: int) -> AsyncGenerator[str, None]:
    try:
        n = 0
        while True:
            await asyncio.sleep(0.001)
            yield f"{index}:{n}"
            n += 1
    finally:
        closed.append(index)


async def failing(closed: list[int], index: int, after: int) -> AsyncGenerator[str, None]:
    try:
        for n in range(after):
            await asyncio.sleep(0.001)
            yield f"{index}:{n}"
        await asyncio.sleep(0.005)
        raise RuntimeError("engine exploded")
    finally:
        closed.append(index)


def test_every_item_comes_out_tagged() -> None:
    async def main() -> list[tuple[int, str]]:
        closed: list[int] = []
        streams = [items(["a", "b"], closed, 0), items(["c"], closed, 1), items(["d", "e", "f"], closed, 2)]
        out = [pair async for pair in merge(streams)]
        assert sorted(closed) == [0, 1, 2]
        return out

    out = asyncio.run(main())
    assert sorted(out) == [(0, "a"), (0, "b"), (1, "c"), (2, "d"), (2, "e"), (2, "f")]
    for i in range(3):  # each stream keeps its own order
        assert [v for j, v in out if j == i] == sorted(v for j, v in out if j == i)


def test_items_are_interleaved_as_they_arrive() -> None:
    # Each stream waits for the consumer to see the other's item, so only arrival order can explain the result.
    async def main() -> list[tuple[int, str]]:
        saw_a0, saw_b0 = asyncio.Event(), asyncio.Event()

        async def first() -> AsyncGenerator[str, None]:
            yield "a0"
            await saw_b0.wait()
            yield "a1"

        async def second() -> AsyncGenerator[str, None]:
            await saw_a0.wait()
            yield "b0"

        out: list[tuple[int, str]] = []
        async with asyncio.timeout(5):
            async for i, item in merge([first(), second()]):
                out.append((i, item))
                if item == "a0":
                    saw_a0.set()
                elif item == "b0":
                    saw_b0.set()
        return out

    assert asyncio.run(main()) == [(0, "a0"), (1, "b0"), (0, "a1")]


def test_single_stream() -> None:
    async def main() -> tuple[list[tuple[int, str]], list[int]]:
        closed: list[int] = []
        return [pair async for pair in merge([items(["x", "y"], closed, 0)])], closed

    assert asyncio.run(main()) == ([(0, "x"), (0, "y")], [0])


def test_no_streams() -> None:
    async def main() -> list[tuple[int, str]]:
        return [pair async for pair in merge([])]

    assert asyncio.run(main()) == []


@pytest.mark.parametrize("count", [1, 3])
def test_error_propagates_and_closes_every_stream(count: int) -> None:
    async def main() -> tuple[list[tuple[int, str]], list[int]]:
        closed: list[int] = []
        streams = [endless(closed, i) for i in range(count - 1)] + [failing(closed, count - 1, after=2)]
        seen: list[tuple[int, str]] = []
        with pytest.raises(RuntimeError, match="engine exploded"):
            async with asyncio.timeout(5):
                async for pair in merge(streams):
                    seen.append(pair)
        return seen, closed

    seen, closed = asyncio.run(main())
    assert sorted(closed) == list(range(count))  # every finally ran before the error reached us
    assert (count - 1, f"{count - 1}:1") in seen  # items before the error still came through


@pytest.mark.parametrize("count", [1, 3])
def test_leaving_early_closes_every_stream(count: int) -> None:
    async def main() -> list[int]:
        closed: list[int] = []
        streams = [endless(closed, i) for i in range(count)]
        async with contextlib.aclosing(merge(streams)) as merged:
            async for _ in merged:
                break
        return closed

    assert sorted(asyncio.run(main())) == list(range(count))


def test_an_exception_inside_the_consumer_closes_every_stream() -> None:
    async def main() -> list[int]:
        closed: list[int] = []
        with pytest.raises(KeyError):
            async with contextlib.aclosing(merge([endless(closed, 0), endless(closed, 1)])) as merged:
                async for _ in merged:
                    raise KeyError("client went away")
        return closed

    assert sorted(asyncio.run(main())) == [0, 1]
