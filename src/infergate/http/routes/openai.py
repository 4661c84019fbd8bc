"""OpenAI routes: chat completions, completions and embeddings (each also under /models/{id})."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from infergate.core.errors import InfergateError
from infergate.core.outputs import PromptInfo, StepEvent
from infergate.core.requests import GenerationRequest
from infergate.gateway.gateway import Gateway, Ticket
from infergate.http.body import read_json
from infergate.http.embeddings import openai_embeddings
from infergate.http.errors import openai_error_response
from infergate.http.headers import compute_headers
from infergate.http.openapi import json_body
from infergate.http.state import admit, get_state
from infergate.http.streaming import cancel_on_disconnect, sse_response
from infergate.http.textgen import compute_type, use_cache, wants_to_wait
from infergate.protocols import sse
from infergate.protocols.embeddings import EmbeddingsRequest
from infergate.protocols.openai import convert
from infergate.protocols.openai.schemas import ChatCompletionRequest, CompletionRequest
from infergate.protocols.tgi.convert import completion_stream_fields

__all__ = ["router"]

router = APIRouter()

# Names clients send when they do not know the served model's id (huggingface_hub sends "dummy", old
# versions and TGI clients "tgi", huggingface.js 4.x the endpoint URL it was given): they mean "the model
# behind this URL".
_PLACEHOLDER_MODELS = {None, "", "dummy", "tgi"}


def _named_model(body: Any) -> str | None:
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or model in _PLACEHOLDER_MODELS or model.startswith(("http://", "https://")):
        return None
    return model


async def _admit(request: Request, path_model: str | None, body: Any) -> Ticket:
    name = path_model if path_model is not None else _named_model(body)
    return await admit(request, name, wants_to_wait(request, body))


def _stream_error(exc: InfergateError, path: str) -> bytes:
    status, payload = openai_error_response(exc, path)
    payload["error"]["http_status_code"] = status  # TGI's field, read by huggingface_hub
    return sse.event(payload)


async def _start(
    events: AsyncGenerator[tuple[int, PromptInfo | StepEvent], None], n: int
) -> tuple[list[PromptInfo], list[tuple[int, StepEvent]]]:
    """Pull events until every choice has its PromptInfo, so that a bad prompt or a limit fails with an HTTP
    status before the 200 starts; returns the infos and any step events already pulled."""
    infos: dict[int, PromptInfo] = {}
    early: list[tuple[int, StepEvent]] = []
    try:
        while len(infos) < n:
            index, event = await anext(events)
            if isinstance(event, PromptInfo):
                infos[index] = event
            else:
                early.append((index, event))
    except BaseException:
        await events.aclose()
        raise
    return [infos[i] for i in range(n)], early


async def _replayed(
    early: list[tuple[int, StepEvent]], events: AsyncGenerator[tuple[int, PromptInfo | StepEvent], None]
) -> AsyncIterator[tuple[int, StepEvent]]:
    for item in early:
        yield item
    async with contextlib.aclosing(events):
        async for index, event in events:
            assert isinstance(event, StepEvent)
            yield index, event


def _seeded(gateway: Gateway, base: GenerationRequest, n: int) -> list[GenerationRequest]:
    """n choices; with a seed, choice i uses seed+i so that choices differ but stay reproducible."""
    seed = base.sampling.seed
    return [base if seed is None or i == 0 else gateway.with_seed(base, seed + i) for i in range(n)]


async def _chat(request: Request, path_model: str | None) -> Response:
    body = await read_json(request)
    ticket = await _admit(request, path_model, body)
    gateway = get_state(request).gateway
    engine, model = ticket.text, ticket.spec.id
    call = convert.parse_chat(body, engine.limits())
    messages = convert.messages_for_template(call.wire)
    add_generation_prompt = call.wire.add_generation_prompt is not False
    prompt = await engine.render_chat(messages, add_generation_prompt=add_generation_prompt)
    max_tokens = call.wire.max_completion_tokens or call.wire.max_tokens
    base = convert.build_request(
        call.wire,
        prompt,
        max_tokens=max_tokens,
        top_n=call.top_logprobs,
        add_special_tokens=bool(call.wire.add_special_tokens),  # the template has the special tokens (vLLM's default)
        messages=messages,
        add_generation_prompt=add_generation_prompt,
    )
    requests = _seeded(gateway, base, call.n)
    request_id = convert.new_id("chatcmpl")
    characters = sum(len(m["content"]) for m in messages)
    cache = use_cache(request, body)
    if not call.stream:
        results = await cancel_on_disconnect(request, gateway.generate(ticket, requests, use_cache=cache))
        payload = convert.chat_response(call, model, request_id, results)
        return JSONResponse(payload, headers=_headers(ticket, characters))
    events = gateway.stream(ticket, requests, use_cache=cache)
    infos, early = await _start(events, call.n)
    created = int(time.time())

    async def chunks() -> AsyncIterator[bytes]:
        generated = 0
        try:
            async for index, event in _replayed(early, events):
                generated += 1
                logprobs = None
                if call.logprobs:
                    logprobs = convert.chat_logprobs([event.token], [event.top_tokens])
                if not event.text and event.finish_reason is None and logprobs is None:
                    continue  # nothing to show yet (an incomplete character, or a held-back stop prefix)
                delta = {"role": "assistant", "content": event.text}
                yield sse.event(
                    convert.chat_chunk(
                        model,
                        request_id,
                        created,
                        index=index,
                        delta=delta,
                        finish=event.finish_reason,
                        logprobs=logprobs,
                    )
                )
        except InfergateError as exc:
            yield _stream_error(exc, request.url.path)
            return
        if call.include_usage:
            usage = convert.usage(ticket.prompt_tokens or infos[0].input_length, generated)
            yield sse.event(convert.chat_chunk(model, request_id, created, usage_=usage))
        yield sse.DONE

    return sse_response(chunks(), _stream_headers(ticket, characters, infos[0].input_length))


def _headers(ticket: Ticket, characters: int) -> dict[str, str]:
    return compute_headers(
        compute_type(ticket), ticket.started, characters, ticket.prompt_tokens, ticket.generated_tokens
    )


def _stream_headers(ticket: Ticket, characters: int, prompt_tokens: int) -> dict[str, str]:
    return {
        "x-compute-type": compute_type(ticket),
        "x-compute-characters": str(characters),
        "x-prompt-tokens": str(prompt_tokens),
    }


@router.post("/v1/chat/completions", summary="OpenAI chat completions", openapi_extra=json_body(ChatCompletionRequest))
async def chat(request: Request) -> Response:
    return await _chat(request, None)


@router.post(
    "/models/{model_id:path}/v1/chat/completions",
    summary="OpenAI chat completions on a model",
    openapi_extra=json_body(ChatCompletionRequest),
)
async def model_chat(model_id: str, request: Request) -> Response:
    return await _chat(request, model_id)


@router.post("/v1/embeddings", summary="OpenAI embeddings", openapi_extra=json_body(EmbeddingsRequest))
async def embeddings(request: Request) -> Response:
    return await openai_embeddings(request, None)


@router.post(
    "/models/{model_id:path}/v1/embeddings",
    summary="OpenAI embeddings on a model",
    openapi_extra=json_body(EmbeddingsRequest),
)
async def model_embeddings(model_id: str, request: Request) -> Response:
    return await openai_embeddings(request, model_id)


@router.post("/v1/completions", summary="OpenAI completions", openapi_extra=json_body(CompletionRequest))
async def completions(request: Request) -> Response:
    return await _completions(request, None, tgi_events=False)


# huggingface.js 4.x sends text generation for an endpoint URL (`.../models/{id}`) here, and hands the stream's
# events to its callers as TGI's: on this route they carry TGI's fields besides OpenAI's.
@router.post(
    "/models/{model_id:path}/v1/completions",
    summary="OpenAI completions on a model",
    openapi_extra=json_body(CompletionRequest),
)
async def model_completions(model_id: str, request: Request) -> Response:
    return await _completions(request, model_id, tgi_events=True)


async def _completions(request: Request, path_model: str | None, *, tgi_events: bool) -> Response:
    body = await read_json(request)
    ticket = await _admit(request, path_model, body)
    gateway = get_state(request).gateway
    model = ticket.spec.id
    call = convert.parse_completion(body, ticket.text.limits())
    top_n = call.logprobs or 0
    requests: list[GenerationRequest] = []
    owners: list[int] = []  # the prompt each choice answers
    for p_index, prompt in enumerate(call.prompts):
        if call.wire.suffix is not None and isinstance(prompt, str):  # fill in the middle, in the family's format
            prompt = await ticket.text.infill_prompt(prompt, call.wire.suffix)
        base = convert.build_request(
            call.wire,
            prompt,
            max_tokens=call.max_tokens,
            top_n=top_n,
            add_special_tokens=call.wire.add_special_tokens is not False,
            prefill_details=call.prompt_details,
        )
        requests += _seeded(gateway, base, call.n)
        owners += [p_index] * call.n
    request_id = convert.new_id("cmpl")
    characters = sum(len(p) if isinstance(p, str) else 0 for p in call.prompts)
    cache = use_cache(request, body)
    if not call.stream:
        results = await cancel_on_disconnect(request, gateway.generate(ticket, requests, use_cache=cache))
        payload = convert.completion_response(call, model, request_id, list(zip(owners, results, strict=True)))
        return JSONResponse(payload, headers=_headers(ticket, characters))
    events = gateway.stream(ticket, requests, use_cache=cache)
    infos, early = await _start(events, len(requests))
    created = int(time.time())

    async def chunks() -> AsyncIterator[bytes]:
        generated = 0
        texts = ["" for _ in requests]  # each choice's text so far, for TGI's `generated_text` (tgi_events)
        logprobs = [convert.LegacyLogprobs() for _ in requests] if call.logprobs is not None else None
        finished: set[int] = set()
        if call.echo:
            for index, owner in enumerate(owners):
                info = infos[index]
                text = convert.prompt_text(call.prompts[owner], info.prefill_pieces)
                texts[index] = text
                echoed = None
                if logprobs is not None:
                    logprobs[index].add_prompt(info.prefill, info.prefill_pieces, info.prefill_top, text)
                    echoed = logprobs[index].json()
                yield sse.event(
                    convert.completion_chunk(model, request_id, created, index=index, text=text, logprobs=echoed)
                )
        try:
            async for index, event in _replayed(early, events):
                generated += 1
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
                    done = event.finish_reason is not None
                    chunk |= completion_stream_fields(event, texts[index] if done else None)
                yield sse.event(chunk)
        except InfergateError as exc:
            yield _stream_error(exc, request.url.path)
            return
        for index in range(len(requests)):  # `max_tokens: 0`: choices that ended with their prompt
            if index not in finished:
                yield sse.event(convert.completion_chunk(model, request_id, created, index=index, finish="length"))
        if call.include_usage:
            prompt_tokens = sum(info.input_length for i, info in enumerate(infos) if i % call.n == 0)
            usage = convert.usage(prompt_tokens, generated)
            yield sse.event(convert.completion_chunk(model, request_id, created, usage_=usage))
        yield sse.DONE

    return sse_response(chunks(), _stream_headers(ticket, characters, sum(i.input_length for i in infos[:: call.n])))
