"""Run several generations of one call together (best_of, n, a list of prompts) and merge their streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

__all__ = ["merge"]

T = TypeVar("T")


class _End:
    """Marks the end of one stream in the merge queue."""


async def merge(streams: list[AsyncGenerator[T, None]]) -> AsyncIterator[tuple[int, T]]:
    """Yield (stream index, item) as items arrive from any stream. Leaving early, or an error in one stream,
    closes all of them (so each engine request is aborted)."""
    if len(streams) == 1:  # the common case: no tasks, no queue
        async with contextlib.aclosing(streams[0]) as only:
            async for item in only:
                yield 0, item
        return
    queue: asyncio.Queue[tuple[int, T | _End | Exception]] = asyncio.Queue()

    async def pump(i: int, stream: AsyncGenerator[T, None]) -> None:
        try:
            async with contextlib.aclosing(stream):
                async for item in stream:
                    await queue.put((i, item))
            await queue.put((i, _End()))
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put((i, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, entry = await queue.get()
            if isinstance(entry, _End):
                remaining -= 1
            elif isinstance(entry, Exception):
                raise entry
            else:
                yield i, entry
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
