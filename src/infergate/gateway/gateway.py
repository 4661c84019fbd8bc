"""The Gateway facade the HTTP layer calls: model id -> ready engine -> generations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace

from infergate.catalog.catalog import Catalog, ModelSpec
from infergate.core.engine import TextGenerator
from infergate.core.errors import BadRequestError
from infergate.core.outputs import GenerationResult, PromptInfo, StepEvent, collect
from infergate.core.requests import GenerationRequest

__all__ = ["Gateway"]


class Gateway:
    def __init__(self, catalog: Catalog, engines: Mapping[str, TextGenerator], wait_for_model_s: float) -> None:
        self.catalog = catalog
        self._engines = engines
        self._wait_for_model_s = wait_for_model_s

    def resolve(self, model_id: str | None) -> tuple[ModelSpec, TextGenerator]:
        spec = self.catalog.resolve(model_id)
        engine = self._engines.get(spec.id)
        if engine is None:
            raise BadRequestError(
                f"model {spec.id} serves the task {spec.task!r}, which this server cannot run yet; "
                "use a text-generation model"
            )
        return spec, engine

    def engines(self) -> Mapping[str, TextGenerator]:
        return self._engines

    async def ready(self, engine: TextGenerator, wait: bool) -> None:
        """Raise ModelLoadingError at once, or (``wait``) block until the model is ready or the bound passes."""
        await engine.wait_ready(self._wait_for_model_s if wait else 0.0)

    def stream(self, engine: TextGenerator, request: GenerationRequest) -> AsyncGenerator[PromptInfo | StepEvent, None]:
        return engine.generate(request)

    async def generate(self, engine: TextGenerator, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Run the requests concurrently; results in request order. One failure cancels the rest."""
        if len(requests) == 1:
            return [await collect(engine.generate(requests[0]))]
        tasks = [asyncio.create_task(collect(engine.generate(r))) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    async def best_of(
        self, engine: TextGenerator, request: GenerationRequest, n: int
    ) -> tuple[GenerationResult, list[GenerationResult]]:
        """TGI's best_of: n sampled sequences, the one with the highest summed logprob first."""
        if n == 1:
            return (await self.generate(engine, [request]))[0], []
        results = await self.generate(engine, [request] * n)
        ranked = sorted(results, key=lambda r: r.logprob_sum, reverse=True)
        return ranked[0], ranked[1:]

    @staticmethod
    def with_seed(request: GenerationRequest, seed: int | None) -> GenerationRequest:
        return replace(request, sampling=replace(request.sampling, seed=seed))
