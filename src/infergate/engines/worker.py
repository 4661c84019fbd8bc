"""BatchWorker: jobs from the event loop, run in batches on one thread of their own.

The engines without a step loop (embeddings, the transformers pipelines) use it. Each time the thread is free
it takes every waiting job up to ``max_batch`` units (inputs) and runs them in one call, so that concurrent
callers share forward passes; a job whose caller left is dropped before it runs; a full queue is a fast
OverloadedError; a failing batch fails its own jobs, never the thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from infergate.core.errors import GenerationError, InfergateError, OverloadedError, ShuttingDownError

__all__ = ["BatchWorker"]

log = logging.getLogger(__name__)

J = TypeVar("J")


@dataclass
class _Entry(Generic[J]):
    job: J
    units: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class BatchWorker(Generic[J]):
    """``run`` takes a batch of jobs and returns one result (or exception) per job, in order."""

    def __init__(
        self, name: str, run: Callable[[list[J]], Sequence[Any]], *, max_batch: int = 64, max_waiting: int = 64
    ) -> None:
        self._name = name
        self._run = run
        self._max_batch = max_batch
        self._max_waiting = max_waiting
        self._cond = threading.Condition()
        self._queue: deque[_Entry[J]] = deque()
        self._stopping = False
        self._started = False
        self.active = 0  # units in the batch being run

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if not self._started:
            self._started = True
            threading.Thread(target=self._loop, name=self._name, daemon=True).start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    async def submit(self, job: J, units: int = 1) -> Any:
        loop = asyncio.get_running_loop()
        entry = _Entry(job, units, loop, loop.create_future())
        with self._cond:
            if self._stopping:
                raise ShuttingDownError()
            if len(self._queue) >= self._max_waiting:
                raise OverloadedError()
            self._queue.append(entry)
            self._cond.notify()
        try:
            return await entry.future
        finally:
            if not entry.future.done():
                entry.future.cancel()  # the caller left: the thread skips it

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._queue:
                    self._cond.wait()
                if self._stopping:
                    leftover = list(self._queue)
                    self._queue.clear()
                    break
                batch: list[_Entry[J]] = []
                size = 0
                while self._queue and (not batch or size + self._queue[0].units <= self._max_batch):
                    entry = self._queue.popleft()
                    if not entry.future.cancelled():
                        batch.append(entry)
                        size += entry.units
                self.active = size
            if not batch:
                continue
            try:
                outcomes: Sequence[Any] = self._run([e.job for e in batch])
            except InfergateError as exc:  # meant for the callers (the model was unloaded, ...)
                outcomes = [exc] * len(batch)
            except Exception as exc:  # one bad batch fails its requests, never the thread
                log.exception("a batch failed on %s", self._name)
                outcomes = [GenerationError(f"{type(exc).__name__}: {exc}")] * len(batch)
            finally:
                self.active = 0
            for entry, outcome in zip(batch, outcomes, strict=True):
                _settle(entry, outcome)
        for entry in leftover:
            _settle(entry, ShuttingDownError())


def _settle(entry: _Entry[Any], outcome: Any) -> None:
    def apply() -> None:
        if entry.future.done():
            return
        if isinstance(outcome, BaseException):
            entry.future.set_exception(outcome)
        else:
            entry.future.set_result(outcome)

    entry.loop.call_soon_threadsafe(apply)
