"""Usage records and token last-use times, written off the request path in batches.

Requests only append to in-memory lists; a background task hands them to the store every ``interval_s``
from a worker thread, and ``close()`` flushes what is left at shutdown. A failed write is retried at the
next flush (up to ``max_pending`` rows are kept), so a database hiccup loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from infergate.store.records import UsageRow

__all__ = ["UsageRecorder"]

log = logging.getLogger(__name__)

Sink = Callable[[list[UsageRow], dict[int, datetime]], None]


class UsageRecorder:
    def __init__(self, sink: Sink, interval_s: float = 1.0, max_pending: int = 100_000) -> None:
        self._sink = sink
        self._interval = interval_s
        self._max_pending = max_pending
        self._rows: list[UsageRow] = []
        self._touched: dict[int, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, row: UsageRow) -> None:
        if len(self._rows) >= self._max_pending:
            log.error("usage backlog full (%d rows): the database is not accepting writes", len(self._rows))
            return
        self._rows.append(row)

    def touch(self, token_id: int) -> None:
        self._touched[token_id] = datetime.now(UTC)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            rows, touched = self._rows, self._touched
            if not rows and not touched:
                return
            self._rows, self._touched = [], {}
            try:
                await asyncio.to_thread(self._sink, rows, touched)
            except Exception:  # keep them for the next flush
                log.exception("writing %d usage rows failed; will retry", len(rows))
                self._rows = rows + self._rows
                for token_id, when in touched.items():
                    self._touched.setdefault(token_id, when)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
