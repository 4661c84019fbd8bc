"""SSE responses and client-disconnect handling.

A stream whose client goes away fails its next write; the body iterator is then closed, which closes the
engine stream and aborts the request (house rule 4: HTTP code never calls abort itself). A non-streaming
request is raced against the client's disconnect (vLLM's ``with_cancellation``), so its work stops too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request
from starlette.responses import StreamingResponse

__all__ = ["SSE_HEADERS", "cancel_on_disconnect", "sse_response"]

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})


class ClientGone(Exception):
    """The client disconnected before its (non-streaming) answer was ready."""


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientGone()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
