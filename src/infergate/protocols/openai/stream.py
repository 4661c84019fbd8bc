"""OpenAI stream rendering: a generation's events -> the chunk payloads of a chat or completion stream.

The route frames them as SSE, adds `data: [DONE]` after the last one, and renders an error mid-stream (these
generators let core errors through)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from infergate.core.outputs import PromptInfo, StepEvent
from infergate.protocols.openai import convert
from infergate.protocols.tgi.convert import completion_stream_fields

__all__ = ["chat_chunks", "completion_chunks"]

Events = AsyncIterator[tuple[int, StepEvent]]


async def chat_chunks(
    call: convert.ChatCall, model: str, request_id: str, created: int, infos: list[PromptInfo], events: Events
) -> AsyncIterator[dict[str, Any]]:
    generated = 0
    prompt_tokens, cached = infos[0].input_length, infos[0].cached_tokens
    async for index, event in events:
        generated += 1
        if event.prompt_tokens is not None and index == 0:  # a remote engine reports them last
            prompt_tokens, cached = event.prompt_tokens, event.cached_tokens
        logprobs = convert.chat_logprobs([event.token], [event.top_tokens]) if call.logprobs else None
        if not event.text and event.finish_reason is None and logprobs is None:
            continue  # nothing to show yet (an incomplete character, or a held-back stop prefix)
        delta: dict[str, Any] = {"role": "assistant", "content": event.text}
        if event.tool_calls:  # whole calls, in one delta before the chunk that ends the choice
            if event.text:
                yield convert.chat_chunk(model, request_id, created, index=index, delta=delta, logprobs=logprobs)
                logprobs = None
            delta = {
                "role": "assistant",
                "content": None,
                "tool_calls": convert.tool_calls_json(event.tool_calls, True),
            }
            yield convert.chat_chunk(model, request_id, created, index=index, delta=delta, logprobs=logprobs)
            delta, logprobs = {}, None
        yield convert.chat_chunk(
            model, request_id, created, index=index, delta=delta, finish=event.finish_reason, logprobs=logprobs
        )
    if call.include_usage:
        used = convert.usage(prompt_tokens, generated, cached)
        yield convert.chat_chunk(model, request_id, created, usage_=used)


async def completion_chunks(
    call: convert.CompletionCall,
    model: str,
    request_id: str,
    created: int,
    infos: list[PromptInfo],
    events: Events,
    *,
    tgi_events: bool,
) -> AsyncIterator[dict[str, Any]]:
    """With ``tgi_events`` each chunk also carries TGI's stream fields (huggingface.js reads them)."""
    count = len(call.requests)
    generated = 0
    texts = ["" for _ in range(count)]  # each choice's text so far, for TGI's `generated_text`
    logprobs = [convert.LegacyLogprobs() for _ in range(count)] if call.logprobs is not None else None
    lengths = [info.input_length for info in infos]
    cached = [info.cached_tokens for info in infos]
    finished: set[int] = set()
    if call.echo:
        for index, owner in enumerate(call.owners):
            info = infos[index]
            text = convert.prompt_text(call.prompts[owner], info.prefill_pieces)
            texts[index] = text
            echoed = None
            if logprobs is not None:
                logprobs[index].add_prompt(info.prefill, info.prefill_pieces, info.prefill_top, text)
                echoed = logprobs[index].json()
            yield convert.completion_chunk(model, request_id, created, index=index, text=text, logprobs=echoed)
    async for index, event in events:
        generated += 1
        if event.prompt_tokens is not None:
            lengths[index], cached[index] = event.prompt_tokens, event.cached_tokens
        step = None
        if logprobs is not None:
            step = convert.LegacyLogprobs(logprobs[index].at)
            step.add_generated(event.token, event.top_tokens)
            logprobs[index].at = step.at
        elif not event.text and event.finish_reason is None:
            continue
        if event.finish_reason is not None:
            finished.add(index)
        chunk = convert.completion_chunk(
            model,
            request_id,
            created,
            index=index,
            text=event.text,
            finish=event.finish_reason,
            logprobs=step.json() if step is not None else None,
        )
        if tgi_events:
            texts[index] += event.text
            chunk |= completion_stream_fields(event, texts[index] if event.finish_reason is not None else None)
        yield chunk
    for index in range(count):  # `max_tokens: 0`: choices that ended with their prompt
        if index not in finished:
            yield convert.completion_chunk(model, request_id, created, index=index, finish="length")
    if call.include_usage:
        prompt_tokens = sum(lengths[i] for i in range(0, count, call.n))
        used = convert.usage(prompt_tokens, generated, convert.cached_tokens(cached[:: call.n]))
        yield convert.completion_chunk(model, request_id, created, usage_=used)
