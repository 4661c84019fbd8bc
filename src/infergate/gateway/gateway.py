"""The Gateway facade the HTTP layer calls: who is calling, may they, how much, from the cache or the engine.

    open():     authenticate -> resolve the model -> tier gate (403) -> count the request (429) -> ready (503)
    generate(): tier's max_new_tokens -> cache lookup -> reserve tokens + a concurrency slot -> engine
                -> settle the reservation, release the slot, store the result
    finish():   one usage record per HTTP request, written off the hot path; its tokens counted in the metrics

Access is checked before the cache, so a cached answer of a gated model never reaches another tier.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from infergate.catalog.catalog import Catalog, ModelSpec
from infergate.core.engine import Embedder, ImageGenerator, ModelEngine, PipelineRunner, TextGenerator
from infergate.core.errors import (
    BadRequestError,
    ForbiddenError,
    ModelLoadingError,
    ModelNotFoundError,
    Quota,
    ReplicaLostError,
    ValidationError,
)
from infergate.core.outputs import Embeddings, GenerationResult, PromptInfo, StepEvent, collect
from infergate.core.requests import EmbedRequest, GenerationRequest, ImageRequest
from infergate.gateway.auth import Authenticator, SessionKey
from infergate.gateway.fanout import merge
from infergate.gateway.principal import Principal
from infergate.gateway.result_cache import ResultCache, replay
from infergate.gateway.tiers import Limiter, TierPolicy
from infergate.gateway.usage import UsageRecorder
from infergate.observability.instruments import Metrics, TokenClock
from infergate.store.records import UsageRow

__all__ = ["Gateway", "Ticket"]

_Events = AsyncGenerator[PromptInfo | StepEvent, None]


@dataclass
class Ticket:
    """One admitted HTTP request: who, which model, where they stand; usage fields fill in as it runs."""

    principal: Principal
    spec: ModelSpec
    engine: ModelEngine
    tier: TierPolicy
    quota: Quota | None = None  # set once the request is counted
    started: float = field(default_factory=time.perf_counter)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached: bool = False

    @property
    def text(self) -> TextGenerator:
        """The engine, for a route that generates text (``open`` checked the task)."""
        assert isinstance(self.engine, TextGenerator), self.spec.task
        return self.engine

    @property
    def embedder(self) -> Embedder:
        assert isinstance(self.engine, Embedder), self.spec.task
        return self.engine

    @property
    def pipeline(self) -> PipelineRunner:
        assert isinstance(self.engine, PipelineRunner), self.spec.task
        return self.engine

    @property
    def painter(self) -> ImageGenerator:
        assert isinstance(self.engine, ImageGenerator), self.spec.task
        return self.engine


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        engines: Mapping[str, ModelEngine],
        *,
        authenticator: Authenticator,
        tiers: Mapping[str, TierPolicy],
        limiter: Limiter,
        cache: ResultCache | None,
        usage: UsageRecorder | None,
        wait_for_model_s: float,
        default_max_tokens: int,
        prefix_per_user: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        """``metrics``: the process's registry (app.py shares it with the HTTP layer and the engines); None makes
        one of its own."""
        self.catalog = catalog
        self.metrics = metrics if metrics is not None else Metrics()
        self.authenticator = authenticator
        self.tiers = tiers
        self._engines = engines
        self._limiter = limiter
        self._cache = cache
        self._usage = usage
        self._wait_for_model_s = wait_for_model_s
        self._default_max_tokens = default_max_tokens
        self._prefix_per_user = prefix_per_user

    # -- admission ---------------------------------------------------------------------------------------
    def resolve(self, model_id: str | None) -> tuple[ModelSpec, ModelEngine]:
        spec = self.catalog.resolve(model_id)
        engine = self._engines.get(spec.id)
        if engine is None:
            raise BadRequestError(
                f"model {spec.id} serves the task {spec.task!r}, which this server cannot run yet; "
                "use a text-generation model"
            )
        return spec, engine

    def engines(self) -> Mapping[str, ModelEngine]:
        return self._engines

    def task_of(self, model_id: str | None) -> str | None:
        """The task the model serves, or None for an unknown id (its request then gets the 404)."""
        try:
            return self.catalog.resolve(model_id).task
        except ModelNotFoundError:
            return None

    async def authenticate(
        self, authorization: str | None, client: str, session: SessionKey | None = None
    ) -> Principal:
        return await self.authenticator.authenticate(authorization, client, session)

    async def standing(self, principal: Principal) -> list[Quota]:
        """The caller's request and token windows as they stand (the account page shows them)."""
        return await self._limiter.standing(principal, self.tiers[principal.tier])

    async def open(
        self,
        authorization: str | None,
        client: str,
        model_id: str | None,
        task: str = "text-generation",
        session: SessionKey | None = None,
    ) -> Ticket:
        """Who is calling and for which model (401, 404), and whether it serves ``task`` (400). The ticket then
        goes through ``admit``; a request refused there is still accounted to its caller."""
        principal = await self.authenticate(authorization, client, session)
        spec, engine = self.resolve(model_id)
        if task not in engine.tasks:
            raise BadRequestError(
                f"Model {spec.id} serves the task {spec.task!r}, not {task!r}. Send it a {spec.task} request "
                f"(POST /models/{spec.id}), or call a {task} model: GET /v1/models lists each model's task.",
                param="model",
            )
        return Ticket(principal, spec, engine, self.tiers[principal.tier])

    async def admit(self, ticket: Ticket, wait: bool) -> None:
        """Tier gate (403), the request count (429), and the model ready (503, or wait for it)."""
        principal, spec = ticket.principal, ticket.spec
        if spec.tiers is not None and principal.tier not in spec.tiers:
            if principal.foreign_token:
                who = "your request carries a token this server did not issue, so it is served as anonymous"
            elif principal.anonymous:
                who = "you sent no token"
            else:
                who = f"your token is on the {principal.tier} tier"
            raise ForbiddenError(
                f"Model {spec.id} is available to the {' and '.join(spec.tiers)} tiers only; {who}. "
                "Use a token of a user on one of those tiers (an admin runs `infergate users set-tier NAME "
                f"{spec.tiers[0]}`), or call a model that is open to all: GET /v1/models lists them."
            )
        ticket.quota = await self._limiter.count_request(principal, ticket.tier)
        ticket.engine.start()  # models that load on first use start now
        if not wait:
            await ticket.engine.wait_ready(0.0)
            return
        try:
            await ticket.engine.wait_ready(self._wait_for_model_s)
        except ModelLoadingError as exc:
            raise ModelLoadingError(spec.id, exc.estimated_time, waited_s=self._wait_for_model_s) from None

    def _fit_to_tier(self, ticket: Ticket, request: GenerationRequest) -> GenerationRequest:
        """The tier's priority and max_new_tokens; a server-chosen default shrinks to fit, an asked one is checked.
        With `prefix_cache_scope = "user"`, the caller's identity salts the prefix cache."""
        if self._prefix_per_user:
            salt = (
                ticket.principal.key if request.cache_salt is None else f"{ticket.principal.key}|{request.cache_salt}"
            )
            request = replace(request, cache_salt=salt)
        tier = ticket.tier
        wanted = request.stopping.max_new_tokens
        if wanted is None:
            cap = min(tier.max_new_tokens, self._default_max_tokens)
            stopping = replace(request.stopping, max_new_tokens=cap, clamp_to_context=True)
            return replace(request, stopping=stopping, priority=tier.priority)
        if wanted > tier.max_new_tokens:
            raise ValidationError(
                f"`max_new_tokens` must be <= {tier.max_new_tokens}. Given: {wanted} "
                f"(the limit of the {tier.name} tier; ask for fewer tokens or for a higher tier)",
                param="max_new_tokens",
            )
        return replace(request, priority=tier.priority)

    # -- running -----------------------------------------------------------------------------------------
    async def generate(
        self, ticket: Ticket, requests: list[GenerationRequest], *, use_cache: bool, variant: str = ""
    ) -> list[GenerationResult]:
        """Run the requests (several: best_of, n, a list of prompts) together; results in request order."""
        requests = [self._fit_to_tier(ticket, r) for r in requests]
        key = ResultCache.key(ticket.spec.id, ticket.spec.task, requests, variant) if self._cache else ""
        if self._cache is not None and use_cache:
            hit = await self._cache.get(key)
            self.metrics.cache_lookup(ticket.spec.id, hit is not None)
            if hit is not None:
                ticket.cached = True
                self._count(ticket, hit)
                return hit
        reservation = await self._limiter.reserve_tokens(
            ticket.principal, ticket.tier, sum(r.stopping.max_new_tokens or 0 for r in requests)
        )
        results: list[GenerationResult] = []
        try:
            slot = await self._limiter.acquire_slot(ticket.principal, ticket.tier)
            try:
                results = await _whole(lambda r: self._generate(ticket, r), requests)
            finally:
                await self._limiter.release_slot(slot)
        finally:
            await self._limiter.settle(reservation, sum(r.generated_tokens for r in results))
        self._count(ticket, results)
        if self._cache is not None:
            await self._cache.put(key, results)
        return results

    async def stream(
        self, ticket: Ticket, requests: list[GenerationRequest], *, use_cache: bool
    ) -> AsyncGenerator[tuple[int, PromptInfo | StepEvent], None]:
        """The requests' events, tagged with the request's index, as they come. Limits and the cache are
        decided before the first event; only streams that all ran to their end are stored."""
        requests = [self._fit_to_tier(ticket, r) for r in requests]
        key = ResultCache.key(ticket.spec.id, ticket.spec.task, requests) if self._cache else ""
        if self._cache is not None and use_cache:
            hit = await self._cache.get(key)
            self.metrics.cache_lookup(ticket.spec.id, hit is not None)
            if hit is not None:
                ticket.cached = True
                self._count(ticket, hit)
                for index, result in enumerate(hit):
                    async for event in replay(result):
                        yield index, event
                return
        reservation = await self._limiter.reserve_tokens(
            ticket.principal, ticket.tier, sum(r.stopping.max_new_tokens or 0 for r in requests)
        )
        kept: list[list[PromptInfo | StepEvent]] = [[] for _ in requests]
        try:
            slot = await self._limiter.acquire_slot(ticket.principal, ticket.tier)
            try:
                async for index, event in merge([self._generate(ticket, r) for r in requests]):
                    if isinstance(event, PromptInfo):
                        ticket.prompt_tokens += event.input_length if index == 0 else 0
                    else:
                        ticket.generated_tokens += 1
                        if event.prompt_tokens is not None and index == 0:  # a remote engine's late count
                            ticket.prompt_tokens = event.prompt_tokens
                    kept[index].append(event)
                    yield index, event
            finally:
                await self._limiter.release_slot(slot)
        finally:
            await self._limiter.settle(reservation, ticket.generated_tokens)
        if self._cache is not None:
            await self._cache.put(key, [await collect(_iterate(events)) for events in kept])

    async def best_of(
        self, ticket: Ticket, request: GenerationRequest, n: int, *, use_cache: bool
    ) -> tuple[GenerationResult, list[GenerationResult]]:
        """TGI's best_of: n sampled sequences, the one with the highest summed logprob first."""
        # One sequence is the same computation as a stream of it: they share a cache entry.
        variant = f"best_of={n}" if n > 1 else ""
        results = await self.generate(ticket, [request] * n, use_cache=use_cache, variant=variant)
        ranked = sorted(results, key=lambda r: r.logprob_sum, reverse=True)
        return ranked[0], ranked[1:]

    async def embed(self, ticket: Ticket, request: EmbedRequest, *, use_cache: bool) -> Embeddings:
        """Sentence embeddings: from the cache, or the engine within the caller's concurrency slot."""

        async def compute() -> Any:
            out = await ticket.embedder.embed(request)
            return {"vectors": out.vectors, "tokens": out.tokens}

        value = await self._cached(ticket, "feature-extraction", repr(request), compute, use_cache)
        ticket.prompt_tokens = value["tokens"]
        return Embeddings(value["vectors"], value["tokens"])

    async def similarity(self, ticket: Ticket, source: str, sentences: list[str], *, use_cache: bool) -> list[float]:
        async def compute() -> Any:
            scores, tokens = await ticket.embedder.similarity(source, sentences)
            return {"scores": scores, "tokens": tokens}

        value = await self._cached(ticket, "sentence-similarity", repr((source, sentences)), compute, use_cache)
        ticket.prompt_tokens = value["tokens"]
        return list(value["scores"])

    async def run_pipeline(self, ticket: Ticket, inputs: Any, parameters: dict[str, Any], *, use_cache: bool) -> Any:
        """A pipeline task's answer (JSON values), from the cache or the engine."""

        async def compute() -> Any:
            return await ticket.pipeline.run(inputs, parameters)

        canonical = json.dumps([inputs, parameters], sort_keys=True)
        return await self._cached(ticket, ticket.spec.task, canonical, compute, use_cache)

    async def text_to_image(self, ticket: Ticket, request: ImageRequest, *, use_cache: bool) -> tuple[bytes, int]:
        """An image within the tier's size and steps (422 beyond them), from the cache or the engine; and its seed.
        Without a seed the image is still cached (the hosted API's behaviour): `x-use-cache: 0` draws anew."""
        tier = ticket.tier
        for name, value in (("width", request.width), ("height", request.height)):
            if value is not None and value > tier.max_image_size:
                raise ValidationError(
                    f"`parameters.{name}` must be <= {tier.max_image_size} on the {tier.name} tier. Given: {value}"
                )
        steps = request.num_inference_steps
        if steps is not None and steps > tier.max_inference_steps:
            raise ValidationError(
                f"`parameters.num_inference_steps` must be <= {tier.max_inference_steps} on the {tier.name} tier. "
                f"Given: {steps}"
            )

        async def compute() -> Any:
            image, seed = await ticket.painter.text_to_image(request)
            return {"image": base64.b64encode(image).decode("ascii"), "seed": seed}

        value = await self._cached(ticket, ticket.spec.task, repr(request), compute, use_cache)
        return base64.b64decode(value["image"]), int(value["seed"])

    async def _cached(
        self, ticket: Ticket, task: str, canonical: str, compute: Callable[[], Awaitable[Any]], use_cache: bool
    ) -> Any:
        """A JSON result: from the cache when allowed, else computed within the caller's concurrency slot."""
        key = ResultCache.key_for(ticket.spec.id, task, canonical)
        if self._cache is not None and use_cache:
            hit = await self._cache.get_json(key)
            self.metrics.cache_lookup(ticket.spec.id, hit is not None)
            if hit is not None:
                ticket.cached = True
                return hit
        slot = await self._limiter.acquire_slot(ticket.principal, ticket.tier)
        try:
            value = await compute()
        finally:
            await self._limiter.release_slot(slot)
        if self._cache is not None:
            await self._cache.put_json(key, value)
        return value

    def _generate(self, ticket: Ticket, request: GenerationRequest) -> _Events:
        """The engine's events for one sequence, timed (TTFT, inter-token latency) here, the one place every
        engine's events pass, local or remote."""
        return _timed(ticket.text.generate(request), self.metrics.clock(ticket.spec.id, ticket.started))

    # -- accounting --------------------------------------------------------------------------------------
    @staticmethod
    def _count(ticket: Ticket, results: list[GenerationResult]) -> None:
        ticket.prompt_tokens = sum(r.input_length for r in results[:1])
        ticket.generated_tokens = sum(r.generated_tokens for r in results)

    async def flush_usage(self) -> None:
        if self._usage is not None:
            await self._usage.flush()

    def finish(self, ticket: Ticket, status: int) -> None:
        """Record the request's usage (called once, when its response has been sent)."""
        if not ticket.cached:
            self.metrics.tokens(ticket.spec.id, ticket.prompt_tokens, ticket.generated_tokens)
        if self._usage is None:
            return
        p = ticket.principal
        if p.token_id is not None:
            self._usage.touch(p.token_id)
        self._usage.record(
            UsageRow(
                user_id=p.user_id,
                token_id=p.token_id,
                model=ticket.spec.id,
                task=ticket.spec.task,
                prompt_tokens=ticket.prompt_tokens,
                generated_tokens=ticket.generated_tokens,
                cached=ticket.cached,
                status=status,
                duration_ms=(time.perf_counter() - ticket.started) * 1000,
                created_at=datetime.now(UTC),
            )
        )


async def _timed(events: _Events, clock: TokenClock) -> _Events:
    """``events`` unchanged, the clock ticking at each token; closing this closes ``events`` (so an engine
    request whose consumer left is aborted as before)."""
    async with aclosing(events) as inner:
        async for event in inner:
            if isinstance(event, StepEvent):
                clock.tick()
            yield event


async def _whole(
    generate: Callable[[GenerationRequest], _Events], requests: list[GenerationRequest]
) -> list[GenerationResult]:
    """Whole answers: nothing reaches the caller before they are complete, so an answer whose remote replica died
    mid-way is run once more (on another replica) instead of failing."""
    try:
        return await _together(generate, requests)
    except ReplicaLostError:
        return await _together(generate, requests)


async def _together(
    generate: Callable[[GenerationRequest], _Events], requests: list[GenerationRequest]
) -> list[GenerationResult]:
    """Run several generations at once (the engine interleaves them); results in request order."""
    if len(requests) == 1:
        return [await collect(generate(requests[0]))]
    events: list[list[PromptInfo | StepEvent]] = [[] for _ in requests]
    async for index, event in merge([generate(r) for r in requests]):
        events[index].append(event)
    return [await collect(_iterate(e)) for e in events]


async def _iterate(items: list[PromptInfo | StepEvent]) -> AsyncGenerator[PromptInfo | StepEvent, None]:
    for item in items:
        yield item
