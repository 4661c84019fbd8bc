"""PipelineEngine: a transformers pipeline task (fill-mask, text-classification, question-answering,
summarization, ...) behind the gateway. Calls run one at a time on a worker thread. The protocol layer has
already checked the inputs and chosen the parameters the task accepts, so what the task still refuses is the
caller's input: a 400 with the task's own words, as in the hosted API's community containers."""

from __future__ import annotations

from typing import Any

from infergate.core.engine import EngineState, EngineStats
from infergate.core.errors import BadRequestError, ShuttingDownError
from infergate.core.tasks import PIPELINE_TASKS
from infergate.engines.lifecycle import ModelLoad
from infergate.engines.pipelines.tasks import TaskRunner, load_task
from infergate.engines.sources import resolve_source
from infergate.engines.worker import BatchWorker

__all__ = ["PipelineEngine", "load_pipeline"]

_DEFAULT_LOAD_ESTIMATE_S = 5.0


def load_pipeline(task: str, source: str, threads: int | None) -> tuple[TaskRunner, str]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    location, kwargs = resolve_source(source)
    return load_task(task, location, kwargs, "cuda" if torch.cuda.is_available() else "cpu")


class PipelineEngine:
    def __init__(
        self,
        model_id: str,
        task: str,
        source: str,
        *,
        max_waiting: int = 64,
        threads: int | None = None,
        loader: Any = load_pipeline,
    ) -> None:
        if task not in PIPELINE_TASKS:
            raise ValueError(f"{task!r} is not a pipeline task; use one of {sorted(PIPELINE_TASKS)}")
        self.model_id = model_id
        self.task = task
        self.tasks = frozenset({task})
        self.source = source
        self.compute_type = "cpu"
        self._threads = threads
        self._loader = loader
        self._run: TaskRunner | None = None
        self._life = ModelLoad(model_id, source, self._load, _DEFAULT_LOAD_ESTIMATE_S)
        self._worker = BatchWorker(f"pipeline:{model_id}", self._run_batch, max_batch=1, max_waiting=max_waiting)
        self._stopping = False

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
        run, device = self._loader(self.task, self.source, self._threads)
        self.compute_type = "gpu" if device.startswith("cuda") else "cpu"
        self._run = run
        return device

    def state(self) -> EngineState:
        return self._life.state()

    def stats(self) -> EngineStats:
        return EngineStats(active=self._worker.active, waiting=self._worker.waiting)

    async def wait_ready(self, timeout: float) -> None:
        await self._life.wait(timeout)
        self._check_ready()

    def _check_ready(self) -> Any:
        self._life.check()
        if self._stopping or self._run is None:
            raise ShuttingDownError()
        return self._run

    async def run(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        """The pipeline's answer to ``inputs``, as JSON-able Python values."""
        self._check_ready()
        return await self._worker.submit((inputs, parameters))

    def _run_batch(self, jobs: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
        import torch
        from transformers.pipelines.base import PipelineException

        assert self._run is not None
        out: list[Any] = []
        for inputs, parameters in jobs:
            try:
                with torch.inference_mode():
                    out.append(_plain(self._run(inputs, parameters)))
            except (AssertionError, ValueError, TypeError, KeyError, PipelineException) as exc:  # the caller's input
                out.append(BadRequestError(f"{self.task} refused the request: {exc}. Check `inputs` and `parameters`."))
        return out


def _plain(value: Any) -> Any:
    """numpy scalars and tuples from pipelines, as JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
