"""OpenAI routes: chat completions (also under /models/{id}), completions."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from infergate.core.engine import TextGenerator
from infergate.core.errors import InfergateError
from infergate.core.outputs import PromptInfo, StepEvent
from infergate.core.requests import GenerationRequest
from infergate.gateway.fanout import merge
from infergate.gateway.gateway import Gateway
from infergate.http.body import read_json
from infergate.http.errors import openai_error, status_for
from infergate.http.headers import compute_headers
from infergate.http.state import get_state
from infergate.http.streaming import cancel_on_disconnect, sse_response
from infergate.http.textgen import wants_to_wait
from infergate.protocols import sse
from infergate.protocols.openai import convert

__all__ = ["router"]

router = APIRouter()

# Names clients send when they do not know the served model's id (huggingface_hub sends "dummy", old
# versions and TGI clients "tgi"): they mean "the model behind this URL".
_PLACEHOLDER_MODELS = {None, "", "dummy", "tgi"}


async def _engine_for(request: Request, path_model: str | None, body: Any) -> tuple[str, TextGenerator]:
    gateway = get_state(request).gateway
    name = path_model
    if name is None and isinstance(body, dict) and body.get("model") not in _PLACEHOLDER_MODELS:
        name = body.get("model") if isinstance(body.get("model"), str) else None
    spec, engine = gateway.resolve(name)
    await gateway.ready(engine, wants_to_wait(request, body))
    return spec.id, engine


def _stream_error(exc: InfergateError) -> bytes:
    payload = openai_error(exc.message, exc.kind, status_for(exc))
    payload["error"]["http_status_code"] = status_for(exc)  # TGI's field, read by huggingface_hub
    return sse.event(payload)


async def _start(streams: list[AsyncGenerator[PromptInfo | StepEvent, None]]) -> list[PromptInfo]:
    """Pull each stream's PromptInfo so that bad prompts fail with an HTTP status before the 200 starts."""
    infos = []
    try:
        for s in streams:
            first = await anext(s)
            assert isinstance(first, PromptInfo)
            infos.append(first)
    except BaseException:
        for s in streams:
            await s.aclose()
        raise
    return infos


def _seeded(gateway: Gateway, base: GenerationRequest, n: int) -> list[GenerationRequest]:
    """n choices; with a seed, choice i uses seed+i so that choices differ but stay reproducible."""
    seed = base.sampling.seed
    return [base if seed is None or i == 0 else gateway.with_seed(base, seed + i) for i in range(n)]


async def _chat(request: Request, path_model: str | None) -> Response:
    started = time.perf_counter()
    body = await read_json(request)
    model, engine = await _engine_for(request, path_model, body)
    gateway = get_state(request).gateway
    call = convert.parse_chat(body, engine.limits())
    prompt = await engine.render_chat(convert.messages_for_template(call.wire))
    max_tokens = call.wire.max_completion_tokens or call.wire.max_tokens
    base = convert.build_request(
        call.wire, prompt, max_tokens=max_tokens, top_n=call.top_logprobs, add_special_tokens=False
    )
    requests = _seeded(gateway, base, call.n)
    request_id = convert.new_id("chatcmpl")
    characters = sum(len(m["content"]) for m in convert.messages_for_template(call.wire))
    if not call.stream:
        results = await cancel_on_disconnect(request, gateway.generate(engine, requests))
        payload = convert.chat_response(call, model, request_id, results)
        usage = payload["usage"]
        headers = compute_headers(
            engine.compute_type, started, characters, usage["prompt_tokens"], usage["completion_tokens"]
        )
        return JSONResponse(payload, headers=headers)
    streams = [gateway.stream(engine, r) for r in requests]
    infos = await _start(streams)
    created = int(time.time())

    async def chunks() -> AsyncIterator[bytes]:
        generated = 0
        try:
            async for index, event in merge(streams):
                assert isinstance(event, StepEvent)
                generated += 1
                logprobs = None
                if call.logprobs:
                    logprobs = convert.chat_logprobs([event.token], [event.top_tokens])
                if not event.text and event.finish_reason is None and logprobs is None:
                    continue  # nothing to show yet (an incomplete character, or a held-back stop prefix)
                yield sse.event(
                    convert.chat_chunk(
                        model,
                        request_id,
                        created,
                        index=index,
                        delta={"role": "assistant", "content": event.text},
                        finish=event.finish_reason,
                        logprobs=logprobs,
                    )
                )
        except InfergateError as exc:
            yield _stream_error(exc)
            return
        if call.include_usage:
            usage = convert.usage(infos[0].input_length, generated)
            yield sse.event(convert.chat_chunk(model, request_id, created, usage_=usage))
        yield sse.DONE

    headers = {
        "x-compute-type": engine.compute_type,
        "x-compute-characters": str(characters),
        "x-prompt-tokens": str(infos[0].input_length),
    }
    return sse_response(chunks(), headers)


@router.post("/v1/chat/completions", summary="OpenAI chat completions")
async def chat(request: Request) -> Response:
    return await _chat(request, None)


@router.post("/models/{model_id:path}/v1/chat/completions", summary="OpenAI chat completions on a model")
async def model_chat(model_id: str, request: Request) -> Response:
    return await _chat(request, model_id)


@router.post("/v1/completions", summary="OpenAI completions")
async def completions(request: Request) -> Response:
    started = time.perf_counter()
    body = await read_json(request)
    model, engine = await _engine_for(request, None, body)
    gateway = get_state(request).gateway
    call = convert.parse_completion(body, engine.limits())
    max_tokens = call.wire.max_tokens or convert.COMPLETION_DEFAULT_MAX_TOKENS
    top_n = call.logprobs or 0
    requests: list[GenerationRequest] = []
    owners: list[int] = []  # the prompt each choice answers
    for p_index, prompt in enumerate(call.prompts):
        base = convert.build_request(call.wire, prompt, max_tokens=max_tokens, top_n=top_n, add_special_tokens=True)
        requests += _seeded(gateway, base, call.n)
        owners += [p_index] * call.n
    request_id = convert.new_id("cmpl")
    characters = sum(len(p) for p in call.prompts)
    if not call.stream:
        results = await cancel_on_disconnect(request, gateway.generate(engine, requests))
        payload = convert.completion_response(call, model, request_id, list(zip(owners, results, strict=True)))
        usage = payload["usage"]
        headers = compute_headers(
            engine.compute_type, started, characters, usage["prompt_tokens"], usage["completion_tokens"]
        )
        return JSONResponse(payload, headers=headers)
    streams = [gateway.stream(engine, r) for r in requests]
    infos = await _start(streams)
    created = int(time.time())

    async def chunks() -> AsyncIterator[bytes]:
        generated = 0
        if call.echo:
            for index, owner in enumerate(owners):
                yield sse.event(
                    convert.completion_chunk(model, request_id, created, index=index, text=call.prompts[owner])
                )
        try:
            async for index, event in merge(streams):
                assert isinstance(event, StepEvent)
                generated += 1
                if not event.text and event.finish_reason is None:
                    continue
                yield sse.event(
                    convert.completion_chunk(
                        model, request_id, created, index=index, text=event.text, finish=event.finish_reason
                    )
                )
        except InfergateError as exc:
            yield _stream_error(exc)
            return
        if call.include_usage:
            prompt_tokens = sum(info.input_length for i, info in enumerate(infos) if i % call.n == 0)
            usage = convert.usage(prompt_tokens, generated)
            yield sse.event(convert.completion_chunk(model, request_id, created, usage_=usage))
        yield sse.DONE

    headers = {"x-compute-type": engine.compute_type, "x-compute-characters": str(characters)}
    return sse_response(chunks(), headers)
