"""OpenAI wire <-> core. Defaults follow OpenAI: sampling at temperature 1 unless `temperature: 0` (or TGI's
`do_sample: false`) asks for greedy."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from infergate.core.engine import ModelLimits
from infergate.core.errors import BadRequestError, ValidationError
from infergate.core.outputs import GenerationResult, Token
from infergate.core.params import SamplingParams, StoppingParams
from infergate.core.requests import GenerationRequest
from infergate.protocols.openai.schemas import ChatCompletionRequest, CompletionRequest, _Sampling
from infergate.protocols.wire import parse_wire

__all__ = [
    "ChatCall",
    "CompletionCall",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "finish_reason",
    "messages_for_template",
    "parse_chat",
    "parse_completion",
    "usage",
]

CHAT_EXAMPLE = '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 50}'
COMPLETION_EXAMPLE = '{"prompt": "Once upon a time", "max_tokens": 50}'
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclass(frozen=True, slots=True)
class ChatCall:
    wire: ChatCompletionRequest
    n: int
    stream: bool
    include_usage: bool
    logprobs: bool
    top_logprobs: int


@dataclass(frozen=True, slots=True)
class CompletionCall:
    wire: CompletionRequest
    prompts: list[str]
    n: int
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: int | None


def _require_object(body: Any, example: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object like {example}; got a JSON {type(body).__name__}")
    return body


def parse_chat(body: Any, limits: ModelLimits) -> ChatCall:
    wire = parse_wire(ChatCompletionRequest, _require_object(body, CHAT_EXAMPLE), CHAT_EXAMPLE)
    if wire.tools:
        raise ValidationError("`tools` are not supported yet by this server; leave them out")
    fmt = (wire.response_format or {}).get("type", "text")
    if fmt != "text":
        raise ValidationError(f'`response_format` of type {fmt!r} is not supported yet; use {{"type": "text"}}')
    top = wire.top_logprobs or 0
    if top and not wire.logprobs:
        raise ValidationError("`top_logprobs` needs `logprobs: true`")
    _check_common(wire, limits)
    return ChatCall(
        wire=wire,
        n=wire.n or 1,
        stream=bool(wire.stream),
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        logprobs=bool(wire.logprobs),
        top_logprobs=top,
    )


def parse_completion(body: Any, limits: ModelLimits, max_prompts: int = 4) -> CompletionCall:
    wire = parse_wire(CompletionRequest, _require_object(body, COMPLETION_EXAMPLE), COMPLETION_EXAMPLE)
    if wire.best_of not in (None, 1):
        raise ValidationError("`best_of` is not supported on /v1/completions; use `n` for several choices")
    prompts = [wire.prompt] if isinstance(wire.prompt, str) else list(wire.prompt)
    if not prompts or len(prompts) > max_prompts:
        raise ValidationError(f"`prompt` must be a string or a list of 1 to {max_prompts} strings")
    _check_common(wire, limits)
    return CompletionCall(
        wire=wire,
        prompts=prompts,
        n=wire.n or 1,
        stream=bool(wire.stream),
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        echo=bool(wire.echo),
        logprobs=wire.logprobs,
    )


def _stops(wire: _Sampling) -> tuple[str, ...]:
    return (wire.stop,) if isinstance(wire.stop, str) else tuple(wire.stop or ())


def _check_common(wire: _Sampling, limits: ModelLimits) -> None:
    stops = _stops(wire)
    if len(stops) > limits.max_stop_sequences:
        raise ValidationError(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(stops)}")
    for key in wire.logit_bias or {}:
        if not key.lstrip("-").isdigit():
            raise ValidationError(f"`logit_bias` keys must be token ids; got {key!r}")


def build_request(
    wire: _Sampling, prompt: str, *, max_tokens: int | None, top_n: int, add_special_tokens: bool
) -> GenerationRequest:
    """The core request for one choice. ``max_tokens=None``: up to the engine's default cap."""
    temperature = 1.0 if wire.temperature is None else wire.temperature
    greedy = temperature == 0.0 or wire.do_sample is False
    sampling = SamplingParams(
        do_sample=not greedy,
        temperature=temperature if not greedy else 1.0,
        top_k=wire.top_k,
        top_p=wire.top_p if wire.top_p is not None else 1.0,
        repetition_penalty=wire.repetition_penalty or 1.0,
        frequency_penalty=wire.frequency_penalty or 0.0,
        presence_penalty=wire.presence_penalty or 0.0,
        logit_bias=tuple((int(k), float(v)) for k, v in (wire.logit_bias or {}).items()),
        seed=wire.seed,
    )
    stopping = StoppingParams(max_new_tokens=max_tokens, stop=_stops(wire), include_stop_in_output=False)
    return GenerationRequest(
        prompt=prompt,
        sampling=sampling,
        stopping=stopping,
        top_n_tokens=top_n,
        add_special_tokens=add_special_tokens,
    )


def messages_for_template(wire: ChatCompletionRequest) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: content as one string (text parts joined, images as links)."""
    out: list[dict[str, Any]] = []
    for m in wire.messages:
        if isinstance(m.content, list):
            content = "".join(
                p.text or "" if p.type == "text" else f"![]({(p.image_url or {}).get('url', '')})" for p in m.content
            )
        else:
            content = m.content or ""
        role = "system" if m.role == "developer" else m.role
        out.append({"role": role, "content": content})
    return out


def finish_reason(reason: str) -> str:
    return {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}.get(reason, reason)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _logprob_entry(token: Token, top: tuple[Token, ...]) -> dict[str, Any]:
    return {
        "token": token.text,
        "logprob": token.logprob,
        "bytes": list(token.text.encode()),
        "top_logprobs": [{"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode())} for t in top],
    }


def chat_logprobs(tokens: list[Token], tops: list[tuple[Token, ...]]) -> dict[str, Any]:
    padded = tops + [()] * (len(tokens) - len(tops))
    return {"content": [_logprob_entry(t, top) for t, top in zip(tokens, padded, strict=True)]}


def chat_response(call: ChatCall, model: str, request_id: str, results: list[GenerationResult]) -> dict[str, Any]:
    choices = []
    for i, r in enumerate(results):
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": chat_logprobs(r.tokens, r.top_tokens) if call.logprobs else None,
                "finish_reason": finish_reason(r.finish_reason),
            }
        )
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage(results[0].input_length, sum(r.generated_tokens for r in results)),
    }


def chat_chunk(
    model: str,
    request_id: str,
    created: int,
    *,
    index: int | None = None,
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    logprobs: dict[str, Any] | None = None,
    usage_: dict[str, int] | None = None,
) -> dict[str, Any]:
    choices = []
    if index is not None:
        choices.append(
            {
                "index": index,
                "delta": delta or {},
                "logprobs": logprobs,
                "finish_reason": finish_reason(finish) if finish else None,
            }
        )
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage_,
    }


def completion_response(
    call: CompletionCall, model: str, request_id: str, results: list[tuple[int, GenerationResult]]
) -> dict[str, Any]:
    """``results`` are (prompt index, result) pairs, n per prompt, in choice order."""
    choices = []
    for i, (prompt_index, r) in enumerate(results):
        text = (call.prompts[prompt_index] if call.echo else "") + r.text
        logprobs = None
        if call.logprobs is not None:
            logprobs = {
                "tokens": [t.text for t in r.tokens],
                "token_logprobs": [t.logprob for t in r.tokens],
                "top_logprobs": [{t.text: t.logprob for t in step} for step in r.top_tokens] or None,
                "text_offset": None,
            }
        choices.append(
            {"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish_reason(r.finish_reason)}
        )
    prompt_tokens = sum(r.input_length for i, (_, r) in enumerate(results) if i % call.n == 0)
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage(prompt_tokens, sum(r.generated_tokens for _, r in results)),
    }


def completion_chunk(
    model: str,
    request_id: str,
    created: int,
    *,
    index: int | None = None,
    text: str = "",
    finish: str | None = None,
    usage_: dict[str, int] | None = None,
) -> dict[str, Any]:
    choices = []
    if index is not None:
        choices.append(
            {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason(finish) if finish else None}
        )
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage_,
    }
