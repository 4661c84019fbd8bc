"""ModelPool: the loaded models kept within a memory budget (`[engine] model_memory_mb`).

After each load the pool measures what every loaded model holds; while the total is over the budget it
unloads the least recently used model that is idle (nothing running or waiting, unused for a moment). A model
that does not fit even alone is unloaded and fails with a message that says what to change, instead of the
machine running out of memory later. An unloaded model loads again on its next request (503 until then,
or a wait with `x-wait-for-model`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from infergate.core.engine import EngineState, EngineStats

__all__ = ["ModelPool", "Poolable"]

log = logging.getLogger(__name__)

_IDLE_S = 2.0  # a model used this recently may be about to run a request: not evicted


class Poolable(Protocol):
    model_id: str
    last_used: float

    def state(self) -> EngineState: ...

    def stats(self) -> EngineStats: ...

    def memory_bytes(self) -> int: ...

    def unload(self, reason: str | None = None) -> None:
        """Free the model; with a reason, requests fail with it (until a later retry), else it reloads."""


class ModelPool:
    def __init__(self, budget_mb: int | None) -> None:
        self.budget = None if budget_mb is None else budget_mb * 2**20
        self._members: list[Poolable] = []
        self._lock = threading.Lock()

    def add(self, engine: Poolable) -> None:
        self._members.append(engine)

    def loaded(self, engine: Poolable) -> None:
        """Called by an engine once its model is loaded (loads run one at a time)."""
        if self.budget is None:
            return
        with self._lock:
            need = engine.memory_bytes()
            if need > self.budget:
                engine.unload(
                    f"it needs {need >> 20} MB and the memory budget is {self.budget >> 20} MB; raise "
                    "`model_memory_mb` in the [engine] section of the config, or serve a smaller model"
                )
                return
            while (total := self._total()) > self.budget:
                victim = self._least_recently_used(exclude=engine)
                if victim is None:
                    log.warning(
                        "models hold %d MB, over the %d MB budget, and none is idle to unload",
                        total >> 20,
                        self.budget >> 20,
                    )
                    return
                log.info("unloading %s (least recently used) to make room for %s", victim.model_id, engine.model_id)
                victim.unload()

    def _total(self) -> int:
        return sum(m.memory_bytes() for m in self._members if m.state().status == "ready")

    def _least_recently_used(self, exclude: Poolable) -> Poolable | None:
        now = time.monotonic()
        idle = [
            m
            for m in self._members
            if m is not exclude
            and m.state().status == "ready"
            and m.stats().active == 0
            and m.stats().waiting == 0
            and now - m.last_used > _IDLE_S
        ]
        return min(idle, key=lambda m: m.last_used, default=None)
