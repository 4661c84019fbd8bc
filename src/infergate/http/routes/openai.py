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
from infergate.gateway.gateway import Ticket
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
from infergate.protocols.openai import convert, stream
from infergate.protocols.openai.schemas import ChatCompletionRequest, CompletionRequest

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


async def _chat(request: Request, path_model: str | None) -> Response:
    body = await read_json(request)
    ticket = await _admit(request, path_model, body)
    call = convert.parse_chat(body, ticket.text.limits())
    model, request_id = ticket.spec.id, convert.new_id("chatcmpl")
    gateway, cache = get_state(request).gateway, use_cache(request, body)
    if not call.stream:
        results = await cancel_on_disconnect(request, gateway.generate(ticket, list(call.requests), use_cache=cache))
        payload = convert.chat_response(call, model, request_id, results)
        return JSONResponse(payload, headers=_headers(ticket, call.characters))
    events = gateway.stream(ticket, list(call.requests), use_cache=cache)
    infos, early = await _start(events, call.n)
    chunks = stream.chat_chunks(call, model, request_id, int(time.time()), infos, _replayed(early, events))
    return sse_response(
        _framed(chunks, request.url.path), _stream_headers(ticket, call.characters, infos[0].input_length)
    )


async def _framed(chunks: AsyncIterator[dict[str, Any]], path: str) -> AsyncIterator[bytes]:
    """SSE frames of an OpenAI stream: the chunks, then `[DONE]`; an error mid-way is the last event (no
    `[DONE]`, so no client mistakes a cut answer for a whole one)."""
    try:
        async for chunk in chunks:
            yield sse.event(chunk)
    except InfergateError as exc:
        yield _stream_error(exc, path)
        return
    yield sse.DONE


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
    call = convert.parse_completion(body, ticket.text.limits())
    model, request_id = ticket.spec.id, convert.new_id("cmpl")
    gateway, cache = get_state(request).gateway, use_cache(request, body)
    requests = list(call.requests)
    if not call.stream:
        results = await cancel_on_disconnect(request, gateway.generate(ticket, requests, use_cache=cache))
        payload = convert.completion_response(call, model, request_id, list(zip(call.owners, results, strict=True)))
        return JSONResponse(payload, headers=_headers(ticket, call.characters))
    events = gateway.stream(ticket, requests, use_cache=cache)
    infos, early = await _start(events, len(requests))
    chunks = stream.completion_chunks(
        call, model, request_id, int(time.time()), infos, _replayed(early, events), tgi_events=tgi_events
    )
    prompt_tokens = sum(i.input_length for i in infos[:: call.n])
    return sse_response(_framed(chunks, request.url.path), _stream_headers(ticket, call.characters, prompt_tokens))
