"""A model's load state, shared by every local engine: idle -> loading -> ready | failed, and stopped.

Loading runs on a thread of its own, so the server answers (503 with an estimate) while it goes on. A failed
load is reported to requests with its cause and retried by the first request after ``RELOAD_AFTER_S``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from infergate.core.engine import EngineState
from infergate.core.errors import ModelLoadFailedError, ModelLoadingError, ShuttingDownError
from infergate.engines.pool import ModelPool, Poolable
from infergate.engines.sources import source_bytes

__all__ = ["RELOAD_AFTER_S", "ModelLoad"]

log = logging.getLogger(__name__)

T = TypeVar("T")

RELOAD_AFTER_S = 30.0
# One load at a time in the process: transformers builds models under a device context (meta tensors) that is
# global to the process, so two threads loading at once corrupt each other ("Cannot copy out of meta tensor").
_LOADING = threading.Lock()


_DISK_BYTES_PER_S = 50e6  # a first guess at reading and building a model, until one is timed here


def size_estimate_s(source: str) -> float:
    """Seconds to load a model of this source's size on disk (0 when unknown: a hub id not yet downloaded)."""
    size = source_bytes(source)
    return 1.0 + size / _DISK_BYTES_PER_S if size else 0.0


class ModelLoad:
    """``load`` builds the model and returns where it runs (for the log); it may raise anything."""

    def __init__(
        self,
        model_id: str,
        source: str,
        load: Callable[[], str],
        estimate_s: float,
        pool: ModelPool | None = None,
        member: Poolable | None = None,
    ) -> None:
        """``estimate_s``: the engine's guess for a model never loaded here; ``pool`` and ``member`` (the
        engine): the memory budget to check after each load, and the load times kept across restarts."""
        self.model_id = model_id
        self.source = source
        self._load = load
        self._pool = pool
        self._member = member
        if pool is not None and member is not None:
            pool.add(member)
        self.status = "idle"  # not started: models that load on first use
        self.error: str | None = None
        self.ready = threading.Event()
        self._started = 0.0
        measured = pool.load_times.get(model_id) if pool is not None else None
        # The estimate until a load is timed: the last one (kept across restarts), else from the size on disk.
        self.last_load_s = measured if measured is not None else max(estimate_s, size_estimate_s(source))
        self.loaded_s: float | None = None  # the last load this process timed (for /metrics)

    def begin(self) -> None:
        self.status = "loading"
        self.error = None
        self._started = time.monotonic()
        threading.Thread(target=self._run, name=f"load:{self.model_id}", daemon=True).start()

    def _run(self) -> None:
        with _LOADING:
            try:
                device = self._load()
            except Exception as exc:  # any failure to load is reported to requests, never raised in the server
                log.exception("loading %s from %s failed", self.model_id, self.source)
                self.error = f"{type(exc).__name__}: {exc}"
                self.status = "failed"
                return
            self.last_load_s = self.loaded_s = time.monotonic() - self._started
            if self._pool is not None and self._member is not None:
                self._pool.load_times.record(self.model_id, self.last_load_s)
                # Room is made before the model is announced, under the load lock: the next load sees it.
                refused = self._pool.loaded(self._member)
                if refused is not None:
                    log.warning("model %s loaded but cannot be kept: %s", self.model_id, refused)
                    self._member.unload(refused)
                    return
            self.status = "ready"
            self.ready.set()
            log.info("model %s ready in %.1f s on %s", self.model_id, self.last_load_s, device)

    def unloaded(self, reason: str | None = None) -> None:
        """The engine freed its model: it loads again on its next request, or, with a reason, fails with it
        until the retry after RELOAD_AFTER_S."""
        self.ready.clear()
        self.error = reason
        self.status = "idle" if reason is None else "failed"
        self._started = time.monotonic()

    def stopped(self) -> None:
        self.status = "stopped"

    def state(self) -> EngineState:
        if self.status == "idle":
            return EngineState("idle", None, self.last_load_s)
        estimate = max(0.5, self.last_load_s - (time.monotonic() - self._started))
        return EngineState(self.status, self.error, estimate if self.status == "loading" else 0.0)

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a load in progress, then ``check``."""
        deadline = time.monotonic() + timeout
        while self.status == "loading" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self.check()

    def require(self, model: T | None, stopping: bool) -> T:
        """``model`` if a request may use it: else what the request must see (``check``'s errors, shutting
        down, or loading again when the memory pool unloaded it a moment ago)."""
        self.check()
        if stopping:
            raise ShuttingDownError()
        if model is None:
            raise ModelLoadingError(self.model_id, self.last_load_s)
        return model

    def check(self) -> None:
        """Raise what a request must see unless the model is ready; restart a load that failed long enough ago."""
        if self.status == "failed":
            error = self.error or "unknown error"
            if time.monotonic() - self._started > RELOAD_AFTER_S:
                self.begin()
            raise ModelLoadFailedError(self.model_id, error)
        if self.status in ("loading", "idle"):
            raise ModelLoadingError(self.model_id, self.state().estimated_time)
        if self.status == "stopped":
            raise ShuttingDownError()
