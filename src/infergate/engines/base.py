"""WorkerEngine: what the engines without a step loop share (embeddings, pipelines, diffusion): the load state,
a BatchWorker thread that runs their calls, their memory, and unloading for the memory pool."""

from __future__ import annotations

import time
from typing import Any

from infergate.core.engine import EngineState, EngineStats
from infergate.core.errors import ModelLoadingError
from infergate.engines.lifecycle import ModelLoad
from infergate.engines.memory import module_bytes, return_freed_memory
from infergate.engines.pool import ModelPool
from infergate.engines.worker import BatchWorker

__all__ = ["WorkerEngine"]


class WorkerEngine:
    """Subclasses build their model (``_build``), list its torch modules (``_modules``) and run a batch of
    calls on the worker thread (``_run_batch``)."""

    tasks: frozenset[str]

    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        estimate_s: float,
        max_batch: int = 1,
        max_waiting: int = 64,
        pool: ModelPool | None = None,
    ) -> None:
        self.model_id = model_id
        self.source = source
        self.compute_type = "cpu"
        self.last_used = 0.0
        self._model: Any = None
        self._life = ModelLoad(model_id, source, self._load, estimate_s, pool, self)
        name = f"{type(self).__name__}:{model_id}"
        self._worker = BatchWorker(name, self._run_batch, max_batch=max_batch, max_waiting=max_waiting)
        self._stopping = False

    # -- for subclasses ------------------------------------------------------------------------------------
    def _build(self) -> tuple[Any, str]:
        """Load the model; return it and the device it runs on."""
        raise NotImplementedError

    def _modules(self, model: Any) -> list[Any]:
        """The torch modules that hold the model's weights."""
        raise NotImplementedError

    def _run_batch(self, jobs: list[Any]) -> list[Any]:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._life.status != "idle":
            return
        self._stopping = False
        self._life.begin()
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._worker.stop()
        self._life.stopped()

    def _load(self) -> str:
        model, device = self._build()
        self.compute_type = "gpu" if device.startswith("cuda") else "cpu"
        self._model = model
        return device

    def unload(self, reason: str | None = None) -> None:
        self._model = None
        self._life.unloaded(reason)
        return_freed_memory()

    def memory_bytes(self) -> int:
        model = self._model
        return module_bytes(*self._modules(model)) if model is not None else 0

    def state(self) -> EngineState:
        return self._life.state()

    def stats(self) -> EngineStats:
        return EngineStats(active=self._worker.active, waiting=self._worker.waiting, load_s=self._life.loaded_s)

    async def wait_ready(self, timeout: float) -> None:
        await self._life.wait(timeout)
        self._check_ready()

    def _check_ready(self) -> Any:
        model = self._life.require(self._model, self._stopping)
        self.last_used = time.monotonic()
        return model

    def _loaded_model(self) -> Any:
        """The model, on the worker thread; ModelLoadingError if it was unloaded since the call was queued."""
        model = self._model
        if model is None:
            raise ModelLoadingError(self.model_id, self._life.last_load_s)
        return model
