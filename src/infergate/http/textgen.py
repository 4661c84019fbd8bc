"""Text generation over the HF task API and TGI routes: one handler, four routes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from infergate.core.errors import GenerationError, InfergateError, OverloadedError, ValidationError
from infergate.core.outputs import PromptInfo, StepEvent
from infergate.http.body import read_json, truthy_header
from infergate.http.errors import error_payload
from infergate.http.headers import compute_headers
from infergate.http.state import get_state
from infergate.http.streaming import cancel_on_disconnect, sse_response
from infergate.protocols import sse
from infergate.protocols.tgi.convert import TgiCall, parse_generate, render_response, render_stream_event

__all__ = ["text_generation", "wants_to_wait"]

# Errors that TGI reports inside a 200 event stream rather than as an HTTP status.
_STREAMED_ERRORS = (ValidationError, OverloadedError, GenerationError)


def wants_to_wait(request: Request, body: Any) -> bool:
    header = truthy_header(request, "x-wait-for-model")
    if header is not None:
        return header
    options = body.get("options") if isinstance(body, dict) else None
    return bool(isinstance(options, dict) and options.get("wait_for_model") is True)


async def text_generation(
    request: Request, model_id: str | None, *, force_stream: bool | None, wrap_list: bool, full_text_default: bool
) -> Response:
    started = time.perf_counter()
    state = get_state(request)
    body = await read_json(request)
    _, engine = state.gateway.resolve(model_id)
    await state.gateway.ready(engine, wants_to_wait(request, body))
    streaming = force_stream if force_stream is not None else isinstance(body, dict) and body.get("stream") is True
    try:
        call = parse_generate(body, stream=force_stream, full_text_default=full_text_default, limits=engine.limits())
    except _STREAMED_ERRORS as exc:
        if streaming:
            return _error_stream(exc, engine.compute_type)
        raise
    characters = len(call.request.prompt)
    if call.stream:
        return await _stream(call, state.gateway.stream(engine, call.request), engine.compute_type, characters)
    best, others = await cancel_on_disconnect(request, state.gateway.best_of(engine, call.request, call.best_of))
    payload: Any = render_response(call, best, others)
    headers = compute_headers(
        engine.compute_type,
        started,
        characters,
        best.input_length,
        best.generated_tokens + sum(o.generated_tokens for o in others),
    )
    return JSONResponse([payload] if wrap_list else payload, headers=headers)


def _error_stream(exc: InfergateError, compute_type: str) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield sse.event(error_payload(exc))

    return sse_response(body(), {"x-compute-type": compute_type})


async def _stream(
    call: TgiCall, events: AsyncGenerator[PromptInfo | StepEvent, None], compute_type: str, characters: int
) -> Response:
    try:
        first = await anext(events)
    except _STREAMED_ERRORS as exc:
        return _error_stream(exc, compute_type)
    except BaseException:
        await events.aclose()
        raise
    assert isinstance(first, PromptInfo)
    headers = {
        "x-compute-type": compute_type,
        "x-compute-characters": str(characters),
        "x-prompt-tokens": str(first.input_length),
    }

    async def body() -> AsyncIterator[bytes]:
        parts: list[str] = []
        finished = False
        async with contextlib.aclosing(events):
            try:
                async for event in events:
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
