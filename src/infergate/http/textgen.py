"""Text generation over the HF task API and TGI routes: one handler, four routes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from infergate.core.errors import GenerationError, InfergateError, OverloadedError, ValidationError
from infergate.core.outputs import PromptInfo, StepEvent
from infergate.gateway.gateway import Ticket
from infergate.http.body import read_json, truthy_header
from infergate.http.errors import error_payload
from infergate.http.headers import compute_headers
from infergate.http.state import admit, get_state
from infergate.http.streaming import cancel_on_disconnect, sse_response
from infergate.protocols import sse
from infergate.protocols.tgi.convert import TgiCall, parse_generate, render_response, render_stream_event

__all__ = ["compute_type", "text_generation", "use_cache", "wants_to_wait"]

# Errors that TGI reports inside a 200 event stream rather than as an HTTP status.
_STREAMED_ERRORS = (ValidationError, OverloadedError, GenerationError)


def _option(body: Any, name: str) -> bool | None:
    options = body.get("options") if isinstance(body, dict) else None
    value = options.get(name) if isinstance(options, dict) else None
    return value if isinstance(value, bool) else None


def wants_to_wait(request: Request, body: Any) -> bool:
    """Wait for a model that is not loaded yet unless the caller asks for the hosted API's 503 (`x-wait-for-model:
    false`, `"options": {"wait_for_model": false}`): today's clients neither retry a 503 nor send the header, so
    waiting (up to `server.wait_for_model_s`) is what gets them their answer on the first call."""
    header = truthy_header(request, "x-wait-for-model")
    if header is not None:
        return header
    option = _option(body, "wait_for_model")
    return True if option is None else option


def use_cache(request: Request, body: Any) -> bool:
    """On unless `x-use-cache: 0/false` or `"options": {"use_cache": false}` says otherwise."""
    header = truthy_header(request, "x-use-cache")
    if header is not None:
        return header
    option = _option(body, "use_cache")
    return True if option is None else option


def compute_type(ticket: Ticket) -> str:
    return "cache" if ticket.cached else ticket.engine.compute_type


async def text_generation(
    request: Request, model_id: str | None, *, force_stream: bool | None, wrap_list: bool, full_text_default: bool
) -> Response:
    body = await read_json(request)
    ticket = await admit(request, model_id, wants_to_wait(request, body))
    gateway = get_state(request).gateway
    streaming = force_stream if force_stream is not None else isinstance(body, dict) and body.get("stream") is True
    try:
        call = parse_generate(
            body, stream=force_stream, full_text_default=full_text_default, limits=ticket.text.limits()
        )
    except _STREAMED_ERRORS as exc:
        if streaming:
            return _error_stream(exc, ticket.engine.compute_type)
        raise
    characters = len(call.request.prompt)
    cache = use_cache(request, body)
    if call.stream:
        return await _stream(call, ticket, gateway.stream(ticket, [call.request], use_cache=cache), characters)
    best, others = await cancel_on_disconnect(
        request, gateway.best_of(ticket, call.request, call.best_of, use_cache=cache)
    )
    payload: Any = render_response(call, best, others)
    headers = compute_headers(
        compute_type(ticket), ticket.started, characters, ticket.prompt_tokens, ticket.generated_tokens
    )
    return JSONResponse([payload] if wrap_list else payload, headers=headers)


def _error_stream(exc: InfergateError, compute: str) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield sse.event(error_payload(exc))

    return sse_response(body(), {"x-compute-type": compute})


async def _stream(
    call: TgiCall,
    ticket: Ticket,
    events: AsyncGenerator[tuple[int, PromptInfo | StepEvent], None],
    characters: int,
) -> Response:
    try:
        _, first = await anext(events)
    except _STREAMED_ERRORS as exc:
        return _error_stream(exc, ticket.engine.compute_type)
    except BaseException:
        await events.aclose()
        raise
    assert isinstance(first, PromptInfo)
    headers = {
        "x-compute-type": compute_type(ticket),
        "x-compute-characters": str(characters),
        "x-prompt-tokens": str(first.input_length),
    }

    async def body() -> AsyncIterator[bytes]:
        parts: list[str] = []
        finished = False
        async with contextlib.aclosing(events):
            try:
                async for _, event in events:
                    assert isinstance(event, StepEvent)
                    parts.append(event.text)
                    finished = event.finish_reason is not None
                    text = "".join(parts) if finished else ""
                    yield sse.event(render_stream_event(call, first, event, text))
            except InfergateError as exc:
                yield sse.event(error_payload(exc))
                return
        if not finished:
            yield sse.event({"error": "Incomplete generation stream", "error_type": "incomplete_generation_stream"})

    return sse_response(body(), headers)
