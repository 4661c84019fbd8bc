"""PipelineEngine: a transformers pipeline task (fill-mask, text-classification, question-answering,
summarization, ...) behind the gateway. Calls run one at a time on a worker thread. The protocol layer has
already checked the inputs and chosen the parameters the task accepts, so what the task still refuses is the
caller's input: a 400 with the task's own words, as in the hosted API's community containers."""

from __future__ import annotations

from typing import Any

from infergate.core.errors import BadRequestError
from infergate.core.tasks import PIPELINE_TASKS
from infergate.engines.base import WorkerEngine
from infergate.engines.pipelines.tasks import LoadedTask, load_task
from infergate.engines.pool import ModelPool
from infergate.engines.sources import resolve_source

__all__ = ["PipelineEngine", "load_pipeline"]


def load_pipeline(task: str, source: str, threads: int | None) -> LoadedTask:
    import torch

    if threads:
        torch.set_num_threads(threads)
    location, kwargs = resolve_source(source)
    return load_task(task, location, kwargs, "cuda" if torch.cuda.is_available() else "cpu")


class PipelineEngine(WorkerEngine):
    def __init__(
        self,
        model_id: str,
        task: str,
        source: str,
        *,
        max_waiting: int = 64,
        threads: int | None = None,
        loader: Any = load_pipeline,
        pool: ModelPool | None = None,
    ) -> None:
        if task not in PIPELINE_TASKS:
            raise ValueError(f"{task!r} is not a pipeline task; use one of {sorted(PIPELINE_TASKS)}")
        super().__init__(model_id, source, estimate_s=5.0, max_waiting=max_waiting, pool=pool)
        self.task = task
        self.tasks = frozenset({task})
        self._threads = threads
        self._loader = loader

    def _build(self) -> tuple[Any, str]:
        loaded: LoadedTask = self._loader(self.task, self.source, self._threads)
        return loaded, loaded.device

    def _modules(self, model: Any) -> list[Any]:
        return list(model.modules)

    async def run(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        """The task's answer to ``inputs``, as JSON-able Python values."""
        self._check_ready()
        return await self._worker.submit((inputs, parameters))

    def _run_batch(self, jobs: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
        import torch
        from transformers.pipelines.base import PipelineException

        loaded: LoadedTask = self._loaded_model()
        out: list[Any] = []
        for inputs, parameters in jobs:
            try:
                with torch.inference_mode():
                    out.append(_plain(loaded.run(inputs, parameters)))
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
