"""ModelPool: what the local engines share about their models: the memory budget (`[engine]
model_memory_mb`) and how long each model took to load (kept in the data directory).

After each load the pool measures what every loaded model holds; while the total is over the budget it
unloads the least recently used model that is idle (nothing running or waiting, unused for a moment). A model
that does not fit even alone is unloaded and fails with a message that says what to change, instead of the
machine running out of memory later. An unloaded model loads again on its next request (503 until then,
or a wait with `x-wait-for-model`).

Load times are kept across restarts, so that the 503 a caller gets while a model loads carries an estimate
measured on this machine; before a model's first load the estimate comes from its size on disk.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Protocol

from infergate.core.engine import EngineState, EngineStats

__all__ = ["LoadTimes", "ModelPool", "Poolable"]

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


class LoadTimes:
    """Seconds each model took to load last time, in a small JSON file (None: kept in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._times: dict[str, float] = {}
        if path is not None and path.is_file():
            try:
                self._times = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
            except (ValueError, TypeError, AttributeError):  # a damaged file: start again rather than fail
                log.warning("ignoring unreadable model load times in %s", path)

    def get(self, model_id: str) -> float | None:
        return self._times.get(model_id)

    def record(self, model_id: str, seconds: float) -> None:
        with self._lock:
            self._times[model_id] = round(seconds, 2)
            if self._path is not None:
                try:
                    tmp = self._path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(self._times, indent=1, sort_keys=True))
                    tmp.replace(self._path)  # whole or not at all
                except OSError as exc:
                    log.warning("could not keep model load times in %s: %s", self._path, exc)


class ModelPool:
    def __init__(self, budget_mb: int | None, load_times: LoadTimes | None = None) -> None:
        self.budget = None if budget_mb is None else budget_mb * 2**20
        self.load_times = load_times or LoadTimes(None)
        self._members: list[Poolable] = []
        self._lock = threading.Lock()

    def add(self, engine: Poolable) -> None:
        self._members.append(engine)

    def loaded(self, engine: Poolable) -> str | None:
        """Make room for a model just loaded, before it is announced ready (loads run one at a time). Returns
        why it cannot be kept (it does not fit even alone), or None."""
        if self.budget is None:
            return None
        with self._lock:
            need = engine.memory_bytes()
            if need > self.budget:
                return (
                    f"it needs {need >> 20} MB and the memory budget is {self.budget >> 20} MB; raise "
                    "`model_memory_mb` in the [engine] section of the config, or serve a smaller model"
                )
            while (total := need + self._total()) > self.budget:
                victim = self._least_recently_used(exclude=engine)
                if victim is None:
                    log.warning(
                        "models hold %d MB, over the %d MB budget, and none is idle to unload",
                        total >> 20,
                        self.budget >> 20,
                    )
                    return None
                log.info("unloading %s (least recently used) to make room for %s", victim.model_id, engine.model_id)
                victim.unload()
        return None

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
