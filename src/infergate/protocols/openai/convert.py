"""OpenAI wire <-> core. Defaults follow OpenAI: sampling at temperature 1 unless `temperature: 0` (or TGI's
`do_sample: false`) asks for greedy."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from infergate import __version__
from infergate.core.engine import ModelLimits
from infergate.core.errors import BadRequestError, ValidationError
from infergate.core.outputs import GenerationResult, Token, ToolCall
from infergate.core.params import SamplingParams, StoppingParams
from infergate.core.requests import GenerationRequest, Grammar, ToolChoice
from infergate.protocols import grammar as grammars
from infergate.protocols.openai.fields import CHAT_REFUSED, COMPLETION_REFUSED, check_fields, lift_tgi_parameters
from infergate.protocols.openai.schemas import ChatCompletionRequest, CompletionRequest, _Sampling
from infergate.protocols.wire import parse_wire

__all__ = [
    "ChatCall",
    "CompletionCall",
    "LegacyLogprobs",
    "Prompt",
    "build_request",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_logprobs",
    "completion_response",
    "finish_reason",
    "messages_for_template",
    "parse_chat",
    "parse_completion",
    "prompt_text",
    "seeded",
    "usage",
]

CHAT_EXAMPLE = '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 50}'
COMPLETION_EXAMPLE = '{"prompt": "Once upon a time", "max_tokens": 50}'
# A string, as TGI sends ("<version>-native"): TGI's own client refuses a null one.
SYSTEM_FINGERPRINT = f"infergate-{__version__}"
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions

# A completion prompt: text, or the token ids the caller sent (run as they are, not re-tokenized).
Prompt = str | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A parsed chat call: the core requests (one per choice) and what rendering needs."""

    wire: ChatCompletionRequest
    n: int
    stream: bool
    include_usage: bool
    logprobs: bool
    top_logprobs: int
    requests: tuple[GenerationRequest, ...]
    characters: int  # of the messages' content, for x-compute-characters


@dataclass(frozen=True, slots=True)
class CompletionCall:
    wire: CompletionRequest
    prompts: list[Prompt]
    n: int
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: int | None
    max_tokens: int
    requests: tuple[GenerationRequest, ...]  # n per prompt, prompt by prompt
    owners: tuple[int, ...]  # the prompt each request answers
    characters: int


def _require_object(body: Any, example: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object like {example}; got a JSON {type(body).__name__}")
    return body


def parse_chat(body: Any, limits: ModelLimits) -> ChatCall:
    data = _require_object(body, CHAT_EXAMPLE)
    check_fields(data, ChatCompletionRequest.model_fields, CHAT_REFUSED)
    wire = parse_wire(ChatCompletionRequest, data, CHAT_EXAMPLE)
    top = wire.top_logprobs or 0
    if top and not wire.logprobs:
        raise ValidationError("`top_logprobs` needs `logprobs: true`", param="top_logprobs")
    _check_common(wire, limits)
    messages = messages_for_template(wire)
    tools, choice = _tools(wire)
    if tools and choice.mode != "none" and wire_grammar(wire) is not None:
        raise ValidationError(
            "`response_format` (or another grammar) cannot be combined with `tools` here: an answer is either "
            'tool calls or text in that format. Leave one out, or send `tool_choice: "none"`',
            param="response_format",
        )
    base = build_request(
        wire,
        "",
        max_tokens=wire.max_completion_tokens or wire.max_tokens,
        top_n=top,
        add_special_tokens=bool(wire.add_special_tokens),  # the template has the special tokens (vLLM's default)
        messages=messages,
        add_generation_prompt=wire.add_generation_prompt is not False,
    )
    base = replace(base, tools=tools, tool_choice=choice)
    n = wire.n or 1
    return ChatCall(
        wire=wire,
        n=n,
        stream=bool(wire.stream),
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        logprobs=bool(wire.logprobs),
        top_logprobs=top,
        requests=seeded(base, n),
        characters=sum(len(m["content"]) for m in messages),
    )


def parse_completion(body: Any, limits: ModelLimits, max_prompts: int = 4) -> CompletionCall:
    data = lift_tgi_parameters(_require_object(body, COMPLETION_EXAMPLE))
    check_fields(data, CompletionRequest.model_fields, COMPLETION_REFUSED)
    wire = parse_wire(CompletionRequest, data, COMPLETION_EXAMPLE)
    if wire.best_of not in (None, 1):
        raise ValidationError("`best_of` is not supported on /v1/completions; use `n` for several choices", "best_of")
    prompts = _prompts(wire.prompt, max_prompts)
    if wire.suffix is not None and any(not isinstance(p, str) for p in prompts):
        raise ValidationError("`suffix` needs a text prompt, not token ids", "suffix")
    max_tokens = COMPLETION_DEFAULT_MAX_TOKENS if wire.max_tokens is None else wire.max_tokens
    if max_tokens == 0 and not wire.echo:
        raise ValidationError(
            "`max_tokens` must be at least 1; 0 is only for `echo: true` (the prompt's logprobs, nothing generated)",
            "max_tokens",
        )
    _check_common(wire, limits)
    n = wire.n or 1
    echo = bool(wire.echo)
    prompt_details = echo and (wire.logprobs is not None or any(not isinstance(p, str) for p in prompts))
    requests: list[GenerationRequest] = []
    for prompt in prompts:
        base = build_request(
            wire,
            prompt,
            max_tokens=max_tokens,
            top_n=wire.logprobs or 0,
            add_special_tokens=wire.add_special_tokens is not False,
            prefill_details=prompt_details,
            suffix=wire.suffix,
        )
        requests += seeded(base, n)
    return CompletionCall(
        wire=wire,
        prompts=prompts,
        n=n,
        stream=bool(wire.stream),
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        echo=echo,
        logprobs=wire.logprobs,
        max_tokens=max_tokens,
        requests=tuple(requests),
        owners=tuple(i for i in range(len(prompts)) for _ in range(n)),
        characters=sum(len(p) if isinstance(p, str) else 0 for p in prompts),
    )


def seeded(base: GenerationRequest, n: int) -> tuple[GenerationRequest, ...]:
    """n choices; with a seed, choice i uses seed+i so that choices differ but stay reproducible."""
    seed = base.sampling.seed
    return tuple(
        base if seed is None or i == 0 else replace(base, sampling=replace(base.sampling, seed=seed + i))
        for i in range(n)
    )


def _prompts(prompt: Any, most: int) -> list[Prompt]:
    """OpenAI's four prompt forms as a list of prompts: a string, a list of strings, token ids (``[1, 2]`` is
    one prompt), or a list of token-id lists."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(_is_id(i) for i in prompt):
        return [tuple(prompt)]
    if isinstance(prompt, list) and 1 <= len(prompt) <= most:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, list) and p and all(_is_id(i) for i in p) for p in prompt):
            return [tuple(p) for p in prompt]
    raise ValidationError(
        f"`prompt` must be a string, a list of token ids, or a list of 1 to {most} strings or of 1 to {most} "
        f"non-empty lists of token ids; got {json.dumps(prompt)[:80]}",
        "prompt",
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stops(wire: _Sampling) -> tuple[str, ...]:
    return (wire.stop,) if isinstance(wire.stop, str) else tuple(wire.stop or ())


def _check_common(wire: _Sampling, limits: ModelLimits) -> None:
    stops = _stops(wire)
    if len(stops) > limits.max_stop_sequences:
        raise ValidationError(
            f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(stops)}", "stop"
        )
    for key in wire.logit_bias or {}:
        if not key.lstrip("-").isdigit():
            raise ValidationError(f"`logit_bias` keys must be token ids; got {key!r}", "logit_bias")


_GRAMMAR_FIELDS = (
    "response_format",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "structured_outputs",
    "grammar",
)
_RESPONSE_FORMAT = (
    '{"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {"name": ..., '
    '"schema": {...}}}'
)


def wire_grammar(wire: _Sampling) -> Grammar | None:
    """The grammar the request's answer must follow, from whichever field asks for one (at most one may)."""
    given = [name for name in _GRAMMAR_FIELDS if getattr(wire, name) is not None]
    if not given or given == ["response_format"] and (wire.response_format or {}).get("type") == "text":
        return None
    if len(given) > 1:
        raise ValidationError(f"give only one of {', '.join(f'`{g}`' for g in given)}", param=given[1])
    name = given[0]
    value = getattr(wire, name)
    if name == "response_format":
        return _response_format(value)
    if name == "guided_json":
        return grammars.schema_grammar(value, name)
    if name == "guided_choice":
        return grammars.choice_grammar(value, name)
    if name in ("guided_regex", "guided_grammar"):
        return grammars.text_grammar(name.removeprefix("guided_"), value, name)
    if name == "grammar":
        return grammars.tgi_grammar(value)
    return _structured_outputs(value)


def _response_format(value: dict[str, Any]) -> Grammar:
    kind = value.get("type")
    if kind == "json_schema" and isinstance(value.get("json_schema"), dict):  # OpenAI's form
        return grammars.schema_grammar(value["json_schema"].get("schema", {}), "response_format")
    if kind == "json_object" and value.get("value") is None:
        return grammars.any_object("response_format")
    if kind in ("json", "json_object", "json_schema", "regex"):  # TGI's grammar, as huggingface_hub sends it
        return grammars.tgi_grammar(value, "response_format")
    raise ValidationError(f"`response_format` must be {_RESPONSE_FORMAT}", param="response_format")


def _structured_outputs(value: dict[str, Any]) -> Grammar:
    """vLLM's `structured_outputs`: one of json, regex, choice, grammar, json_object."""
    if value.get("json") is not None:
        return grammars.schema_grammar(value["json"], "structured_outputs.json")
    if value.get("regex") is not None:
        return grammars.text_grammar("regex", value["regex"], "structured_outputs.regex")
    if value.get("choice") is not None:
        return grammars.choice_grammar(value["choice"], "structured_outputs.choice")
    if value.get("grammar") is not None:
        return grammars.text_grammar("grammar", value["grammar"], "structured_outputs.grammar")
    if value.get("json_object"):
        return grammars.any_object("structured_outputs.json_object")
    raise ValidationError(
        "`structured_outputs` must give one of `json`, `regex`, `choice`, `grammar` or `json_object`",
        param="structured_outputs",
    )


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _tools(wire: ChatCompletionRequest) -> tuple[tuple[dict[str, Any], ...] | None, ToolChoice]:
    """The request's tools, checked as OpenAI checks them, and what it asks of the model about calling them."""
    tools = wire.tools or []
    names: list[str] = []
    for i, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise ValidationError(
                f'`tools[{i}]` must be {{"type": "function", "function": {{"name": ..., "parameters": {{...}}}}}}',
                param=f"tools[{i}]",
            )
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise ValidationError(
                f"`tools[{i}].function.name` must be 1 to 64 letters, digits, underscores or dashes; got {name!r}",
                param=f"tools[{i}].function.name",
            )
        if not isinstance(function.get("parameters", {}), dict):
            raise ValidationError(
                f"`tools[{i}].function.parameters` must be a JSON schema object", param=f"tools[{i}].function"
            )
        names.append(name)
    parallel = wire.parallel_tool_calls is not False
    choice = wire.tool_choice
    if choice is None:
        return tuple(tools) or None, ToolChoice("auto", parallel=parallel)
    if isinstance(choice, dict):  # {"type": "function", "function": {"name": ...}}
        choice = (choice.get("function") or {}).get("name")
        if not isinstance(choice, str):
            raise ValidationError(
                '`tool_choice` must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
                param="tool_choice",
            )
        named = True
    else:
        named = choice not in ("none", "auto", "required")  # TGI takes a function's name as it is
    if not tools and choice != "none":
        raise ValidationError("`tool_choice` is only allowed when `tools` are given", param="tool_choice")
    if named and choice not in names:
        raise ValidationError(
            f"`tool_choice` names {choice!r}, which is not among the tools ({', '.join(names)})", param="tool_choice"
        )
    if named:
        return tuple(tools), ToolChoice("required", choice, parallel)
    return tuple(tools) or None, ToolChoice(choice, parallel=parallel)


def build_request(
    wire: _Sampling,
    prompt: Prompt,
    *,
    max_tokens: int | None,
    top_n: int,
    add_special_tokens: bool,
    prefill_details: bool = False,
    messages: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    suffix: str | None = None,
) -> GenerationRequest:
    """The core request for one choice. ``max_tokens=None``: up to the engine's default cap. A chat passes its
    ``messages`` too, for engines that apply their own template."""
    temperature = 1.0 if wire.temperature is None else wire.temperature
    greedy = temperature == 0.0 or wire.do_sample is False
    sampling = SamplingParams(
        do_sample=not greedy,
        temperature=temperature if not greedy else 1.0,
        top_k=wire.top_k if wire.top_k is not None and wire.top_k > 0 else None,  # vLLM: -1 or 0 is "all"
        top_p=wire.top_p if wire.top_p is not None else 1.0,
        typical_p=wire.typical_p if wire.typical_p is not None else 1.0,
        min_p=wire.min_p or 0.0,
        repetition_penalty=wire.repetition_penalty or 1.0,
        frequency_penalty=wire.frequency_penalty or 0.0,
        presence_penalty=wire.presence_penalty or 0.0,
        logit_bias=tuple((int(k), float(v)) for k, v in (wire.logit_bias or {}).items()),
        seed=wire.seed,
    )
    stopping = StoppingParams(
        max_new_tokens=max_tokens,
        stop=_stops(wire),
        include_stop_in_output=bool(wire.include_stop_str_in_output),
        ignore_eos=bool(wire.ignore_eos),
    )
    return GenerationRequest(
        prompt=prompt if isinstance(prompt, str) else "",
        prompt_ids=None if isinstance(prompt, str) else prompt,
        sampling=sampling,
        stopping=stopping,
        truncate=wire.truncate_prompt_tokens,
        cache_salt=wire.cache_salt,
        top_n_tokens=top_n,
        prefill_details=prefill_details,
        add_special_tokens=add_special_tokens,
        messages=tuple(messages) if messages is not None else None,
        add_generation_prompt=add_generation_prompt,
        suffix=suffix,
        grammar=wire_grammar(wire),
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
        message: dict[str, Any] = {"role": role, "content": content}
        if m.tool_calls:
            message["tool_calls"] = m.tool_calls
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            message["name"] = m.name
        out.append(message)
    return out


def finish_reason(reason: str) -> str:
    return {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}.get(reason, reason)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI's usage object; ``cached_tokens`` (prompt tokens the engine found computed) when the engine says."""
    found: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        found["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return found


def cached_tokens(counts: list[int | None]) -> int | None:
    """The cached prompt tokens of one request's prompts (None when no engine said)."""
    known = [c for c in counts if c is not None]
    return sum(known) if known else None


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
        message: dict[str, Any] = {"role": "assistant", "content": r.text}
        if r.tool_calls:
            message = {"role": "assistant", "content": r.text or None, "tool_calls": tool_calls_json(r.tool_calls)}
        choices.append(
            {
                "index": i,
                "message": message,
                "logprobs": chat_logprobs(r.tokens, r.top_tokens) if call.logprobs else None,
                "finish_reason": finish_reason(r.finish_reason),
            }
        )
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage(results[0].input_length, sum(r.generated_tokens for r in results), results[0].cached_tokens),
    }


def tool_calls_json(calls: list[ToolCall] | tuple[ToolCall, ...], stream: bool = False) -> list[dict[str, Any]]:
    """OpenAI's tool_calls; in a stream each also has its ``index`` (the SDKs assemble deltas by it)."""
    out = []
    for i, call in enumerate(calls):
        entry: dict[str, Any] = {"index": i} if stream else {}
        entry |= {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        out.append(entry)
    return out


def chat_chunk(
    model: str,
    request_id: str,
    created: int,
    *,
    index: int | None = None,
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    logprobs: dict[str, Any] | None = None,
    usage_: dict[str, Any] | None = None,
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
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage_,
    }


def prompt_text(prompt: Prompt, pieces: tuple[str, ...]) -> str:
    """The prompt as echoed: the text sent, or the decoded text of the token ids sent (the engine's
    ``prefill_pieces``)."""
    return prompt if isinstance(prompt, str) else "".join(pieces)


def _top_dict(token: Token, top: tuple[Token, ...], text: str) -> dict[str, float | None]:
    """The alternatives at one position, with the chosen token among them (as vLLM does: a caller comparing
    the token's logprob with the best one learns whether it was the most likely)."""
    out: dict[str, float | None] = {t.text: t.logprob for t in top}
    out.setdefault(text, token.logprob)
    return out


class LegacyLogprobs:
    """OpenAI's legacy `logprobs` object, built token by token: with `echo`, the prompt's tokens first (the
    first one without a logprob or alternatives), then the generated ones. ``text_offset`` is where each token
    starts in the choice's text; a special token (not in the text) takes no room."""

    def __init__(self, start: int = 0) -> None:
        self.at = start
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float | None] | None] = []
        self.text_offset: list[int] = []

    def add(self, token: Token, text: str, top: tuple[Token, ...] | None, width: int) -> None:
        self.tokens.append(text)
        self.token_logprobs.append(token.logprob)
        self.top_logprobs.append(None if top is None else _top_dict(token, top, text))
        self.text_offset.append(self.at)
        self.at += width

    def add_prompt(
        self, prefill: tuple[Token, ...], pieces: tuple[str, ...], tops: tuple[tuple[Token, ...], ...], prompt: str
    ) -> None:
        pieces = pieces or tuple(t.text for t in prefill)
        tops = tops or ((),) * len(prefill)
        start = self.at
        for i, (token, piece, top) in enumerate(zip(prefill, pieces, tops, strict=True)):
            self.add(token, piece, None if i == 0 else top, len(piece))
        self.at = start + len(prompt)  # the text echoed is the prompt as sent

    def add_generated(self, token: Token, top: tuple[Token, ...]) -> None:
        self.add(token, token.text, top, 0 if token.special else len(token.text))

    def json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        }


def completion_logprobs(call: CompletionCall, prompt: str, result: GenerationResult) -> dict[str, Any]:
    """The legacy logprobs of one choice (``prompt``: the text echoed, "" without `echo`)."""
    out = LegacyLogprobs()
    if call.echo:
        out.add_prompt(result.prefill, result.prefill_pieces, result.prefill_top, prompt)
    generated_tops = result.top_tokens + [()] * (len(result.tokens) - len(result.top_tokens))
    for token, top in zip(result.tokens, generated_tops, strict=True):
        out.add_generated(token, top)
    return out.json()


def completion_response(
    call: CompletionCall, model: str, request_id: str, results: list[tuple[int, GenerationResult]]
) -> dict[str, Any]:
    """``results`` are (prompt index, result) pairs, n per prompt, in choice order."""
    choices = []
    for i, (prompt_index, r) in enumerate(results):
        prompt = prompt_text(call.prompts[prompt_index], r.prefill_pieces) if call.echo else ""
        logprobs = completion_logprobs(call, prompt, r) if call.logprobs is not None else None
        choices.append(
            {"index": i, "text": prompt + r.text, "logprobs": logprobs, "finish_reason": finish_reason(r.finish_reason)}
        )
    firsts = [r for i, (_, r) in enumerate(results) if i % call.n == 0]  # the prompt counts once, not per choice
    prompt_tokens = sum(r.input_length for r in firsts)
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage(
            prompt_tokens, sum(r.generated_tokens for _, r in results), cached_tokens([r.cached_tokens for r in firsts])
        ),
    }


def completion_chunk(
    model: str,
    request_id: str,
    created: int,
    *,
    index: int | None = None,
    text: str = "",
    finish: str | None = None,
    logprobs: dict[str, Any] | None = None,
    usage_: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choices = []
    if index is not None:
        choices.append(
            {
                "index": index,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish_reason(finish) if finish else None,
            }
        )
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage_,
    }
