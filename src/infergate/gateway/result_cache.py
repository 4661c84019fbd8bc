"""The result cache: complete generation results keyed by model, task and the canonical request.

A hit returns exactly what the first request returned (for sampled requests too, as the hosted API did);
`x-use-cache: 0` bypasses it. Streams are replayed from a stored result in the same SSE format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from typing import Any

from infergate.core.outputs import GenerationResult, PromptInfo, StepEvent, Token, ToolCall
from infergate.core.requests import GenerationRequest
from infergate.gateway.cache_backends import CacheBackend, cache_key

__all__ = ["ResultCache", "replay"]

log = logging.getLogger(__name__)


class ResultCache:
    def __init__(self, backend: CacheBackend, ttl_s: float) -> None:
        self._backend = backend
        self._ttl = ttl_s

    @staticmethod
    def key(model_id: str, task: str, requests: list[GenerationRequest], variant: str = "") -> str:
        """``variant`` separates calls whose results differ beyond the requests (best_of's ranking)."""
        # Priority is the caller's tier, not part of what is computed. The repr of these frozen dataclasses
        # (strings, numbers, tuples) is canonical and ten times cheaper than a JSON of asdict() on the hot path.
        canonical = "|".join(repr(replace(r, priority=0)) for r in requests)
        return ResultCache.key_for(model_id, task, variant + canonical)

    @staticmethod
    def key_for(model_id: str, task: str, canonical: str) -> str:
        """The key of any task's result: ``canonical`` is the request in a form that equal requests share."""
        return cache_key("v2", model_id, task, canonical)

    async def get(self, key: str) -> list[GenerationResult] | None:
        raw = await self.get_json(key)
        try:
            return None if raw is None else [_result_from(d) for d in raw]
        except (KeyError, TypeError):  # an entry from another version: a miss, not an error
            log.warning("ignoring an unreadable result-cache entry")
            return None

    async def put(self, key: str, results: list[GenerationResult]) -> None:
        await self.put_json(key, [asdict(r) for r in results])

    async def get_json(self, key: str) -> Any:
        """A stored JSON value (None on a miss or an unreadable entry)."""
        raw = await self._backend.get(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            log.warning("ignoring an unreadable result-cache entry")
            return None

    async def put_json(self, key: str, value: Any) -> None:
        await self._backend.set(key, json.dumps(value).encode(), self._ttl)

    async def close(self) -> None:
        await self._backend.close()


def _tokens(items: list[Any]) -> list[Token]:
    return [Token(**t) for t in items]


def _result_from(d: dict[str, Any]) -> GenerationResult:
    return GenerationResult(
        text=d["text"],
        finish_reason=d["finish_reason"],
        input_length=d["input_length"],
        seed=d["seed"],
        tokens=_tokens(d["tokens"]),
        top_tokens=[tuple(_tokens(step)) for step in d["top_tokens"]],
        prefill=tuple(_tokens(d["prefill"])),
        prefill_pieces=tuple(d.get("prefill_pieces", ())),
        prefill_top=tuple(tuple(_tokens(step)) for step in d.get("prefill_top", ())),
        tool_calls=[ToolCall(c["id"], c["name"], c["arguments"]) for c in d.get("tool_calls", ())],
    )


async def replay(result: GenerationResult) -> AsyncIterator[PromptInfo | StepEvent]:
    """The events that produced ``result``. A non-special token's text is exactly what it added."""
    yield PromptInfo(result.input_length, result.seed, result.prefill, result.prefill_pieces, result.prefill_top)
    last = len(result.tokens)
    for i, token in enumerate(result.tokens, start=1):
        top = result.top_tokens[i - 1] if i <= len(result.top_tokens) else ()
        yield StepEvent(
            index=i,
            token=token,
            text="" if token.special else token.text,
            top_tokens=top,
            finish_reason=result.finish_reason if i == last else None,
            tool_calls=tuple(result.tool_calls) if i == last else (),
        )
