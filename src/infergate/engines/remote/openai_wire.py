"""Sans-IO adapter for OpenAI-compatible engines (vLLM, SGLang, llama.cpp's server, Ollama, LiteLLM).

A generation is always sent as a stream (so that a client that leaves closes the upstream request and the
engine stops): ``/v1/chat/completions`` with the messages when the request is a chat (the engine applies its
own template), ``/v1/completions`` otherwise. Logprobs are asked for only with ``top_n_tokens``: llama.cpp's
server refuses them unless started with ``--logits_all`` and its chat stream ends after one token with them.
Without them each streamed chunk is one token (what vLLM, SGLang and llama.cpp send) and its logprob is unknown.

Sampling names beyond OpenAI's (``top_k``, ``min_p``, ``repetition_penalty``, ``typical_p``, ``ignore_eos``,
``truncate_prompt_tokens``) are vLLM's and SGLang's; llama.cpp's server reads ``repeat_penalty`` for the last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from infergate.core.errors import ValidationError
from infergate.core.outputs import Token, ToolCall
from infergate.core.requests import GenerationRequest, Grammar

__all__ = ["Piece", "ToolCallDeltas", "build_generation", "parse_chunk", "UNKNOWN_TOKEN_ID"]

UNKNOWN_TOKEN_ID = -1  # OpenAI responses carry token texts, not ids


@dataclass(frozen=True, slots=True)
class Piece:
    """What one upstream event adds: a token (or a chunk of text without token boundaries), the finish reason
    when it ends the generation, and the prompt's length (and how much of it the engine had cached) when the
    engine reports it."""

    text: str = ""
    token: Token | None = None
    top: tuple[Token, ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    cached_tokens: int | None = None
    tool_deltas: tuple[dict[str, Any], ...] = ()  # a chat stream's `delta.tool_calls`


class ToolCallDeltas:
    """A chat stream's tool calls, assembled from their deltas (the first of a call has its id and name, the
    rest more of its arguments), by their ``index``."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, deltas: tuple[dict[str, Any], ...]) -> None:
        for delta in deltas:
            call = self._calls.setdefault(int(delta.get("index", len(self._calls))), {"arguments": ""})
            function = delta.get("function") or {}
            if delta.get("id"):
                call["id"] = str(delta["id"])
            if function.get("name"):
                call["name"] = str(function["name"])
            arguments = function.get("arguments")
            call["arguments"] += arguments if isinstance(arguments, str) else json.dumps(arguments or {})

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(c.get("id") or f"call_{i}", c.get("name", ""), c["arguments"] or "{}")
            for i, c in sorted(self._calls.items())
        )


def build_generation(request: GenerationRequest, model: str, strict: bool = False) -> tuple[str, dict[str, Any]]:
    """The path and JSON body for one generation. ``strict``: the server refuses names it does not know (an
    infergate, TGI's chat route), so llama.cpp's own names are left out."""
    if request.prefill_details:
        raise ValidationError(
            "this model is served by an OpenAI-compatible engine, which streams no prompt logprobs: "
            "`decoder_input_details` cannot be returned; leave it out (or use a model served here)",
            param="decoder_input_details",
        )
    s, stop = request.sampling, request.stopping
    body: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    if request.messages is not None:
        path = "/v1/chat/completions"
        body["messages"] = list(request.messages)
        if request.top_n_tokens:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_n_tokens
        if not request.add_generation_prompt:
            body["add_generation_prompt"] = False  # vLLM's name; a final assistant message is continued
            body["continue_final_message"] = True
        if request.tools:
            body["tools"] = list(request.tools)
            choice = request.tool_choice
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}} if choice.name is not None else choice.mode
            )
            if not choice.parallel:
                body["parallel_tool_calls"] = False
    else:
        path = "/v1/completions"
        body["prompt"] = list(request.prompt_ids) if request.prompt_ids is not None else request.prompt
        if request.top_n_tokens:
            body["logprobs"] = request.top_n_tokens
    if stop.max_new_tokens is not None:
        body["max_tokens"] = stop.max_new_tokens
    body["temperature"] = s.temperature if s.do_sample else 0.0
    if s.do_sample:
        body["top_p"] = s.top_p  # llama.cpp's server defaults to 0.95
        if s.top_k is not None:
            body["top_k"] = s.top_k
        body["min_p"] = s.min_p  # llama.cpp's server defaults to 0.05
        if s.typical_p < 1.0:
            body["typical_p"] = s.typical_p
    if s.repetition_penalty != 1.0:
        body["repetition_penalty"] = s.repetition_penalty
    if not strict:  # llama.cpp's server applies 1.1 unless told otherwise; a request that asks for none gets none
        body["repeat_penalty"] = s.repetition_penalty
    if s.frequency_penalty:
        body["frequency_penalty"] = s.frequency_penalty
    if s.presence_penalty:
        body["presence_penalty"] = s.presence_penalty
    if s.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in s.logit_bias}
    if s.seed is not None:
        body["seed"] = s.seed
    if stop.stop:
        body["stop"] = list(stop.stop)
        if stop.include_stop_in_output:
            body["include_stop_str_in_output"] = True  # vLLM's; others leave it out, and the engine adds it back
    if stop.ignore_eos:
        body["ignore_eos"] = True
    if request.truncate is not None:
        body["truncate_prompt_tokens"] = request.truncate
    if request.grammar is not None:
        body |= _grammar_fields(request.grammar, chat=request.messages is not None, strict=strict)
    return path, body


def _grammar_fields(grammar: Grammar, *, chat: bool, strict: bool) -> dict[str, Any]:
    """A grammar in the fields OpenAI-compatible engines read: OpenAI's `response_format` for a JSON schema on a
    chat (vLLM, SGLang, llama.cpp's server, Ollama, infergate), vLLM's `guided_*` otherwise (infergate reads
    them too); llama.cpp's server reads its own `json_schema` and `grammar` (GBNF)."""
    if grammar.kind == "json":
        schema = json.loads(grammar.value)
        if chat:
            fields: dict[str, Any] = {
                "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
            }
        else:
            fields = {"guided_json": schema}
        if not strict:
            fields["json_schema"] = schema
        return fields
    if grammar.kind == "regex":
        return {"guided_regex": grammar.value}
    fields = {"guided_grammar": grammar.value}
    if grammar.kind == "gbnf" and not strict:
        fields["grammar"] = grammar.value
    return fields


def build_embeddings(inputs: list[str], model: str, dimensions: int | None) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"model": model, "input": inputs, "encoding_format": "float"}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return "/v1/embeddings", body


def parse_embeddings(payload: Any) -> tuple[list[list[float]], int]:
    data = sorted(payload["data"], key=lambda d: d.get("index", 0))
    usage = payload.get("usage") or {}
    return [list(map(float, d["embedding"])) for d in data], int(usage.get("prompt_tokens") or 0)


def parse_chunk(chunk: dict[str, Any], stops: tuple[str, ...]) -> list[Piece]:
    """One streamed completion or chat chunk as pieces (several when the chunk carries several tokens)."""
    pieces: list[Piece] = []
    usage = chunk.get("usage")
    for choice in chunk.get("choices") or ():
        text = choice.get("text")
        delta = choice.get("delta") or choice.get("message") or {}
        if text is None:
            text = delta.get("content") or ""
        if delta.get("tool_calls"):
            pieces.append(Piece(tool_deltas=tuple(delta["tool_calls"])))
        tokens = _tokens(choice.get("logprobs"))
        finish = _finish(choice, stops)
        if tokens and "".join(t.text for t, _ in tokens) == text:
            pieces += [Piece(t.text, t, top) for t, top in tokens]
        elif tokens:  # the text does not split along the tokens (a held-back stop, a partial character)
            pieces += [Piece("", t, top) for t, top in tokens[:-1]]
            pieces.append(Piece(text, tokens[-1][0], tokens[-1][1]))
        elif text:
            pieces.append(Piece(text, Token(UNKNOWN_TOKEN_ID, text, None)))
        if finish is not None:
            last = pieces.pop() if pieces else Piece()
            pieces.append(Piece(last.text, last.token, last.top, finish))
    if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        pieces.append(
            Piece(
                prompt_tokens=int(usage["prompt_tokens"]),
                generated_tokens=usage.get("completion_tokens"),
                cached_tokens=int(cached) if cached is not None else None,
            )
        )
    return pieces


def _finish(choice: dict[str, Any], stops: tuple[str, ...]) -> str | None:
    """OpenAI's finish reason in TGI's words. vLLM's `stop_reason` names the stop string (None: the EOS token);
    an engine that does not send it stopped on a stop sequence only if the request had some (a guess that
    errs toward the stop sequence, which is what the caller asked for)."""
    reason = choice.get("finish_reason")
    if reason is None:
        return None
    if reason in ("length", "tool_calls"):
        return str(reason)
    if "stop_reason" in choice:
        return "stop_sequence" if isinstance(choice["stop_reason"], str) else "eos_token"
    return "stop_sequence" if stops else "eos_token"


def stop_reason(chunk: dict[str, Any]) -> str | None:
    """The stop string a vLLM-style engine says it stopped on, if any."""
    for choice in chunk.get("choices") or ():
        if isinstance(choice.get("stop_reason"), str):
            return str(choice["stop_reason"])
    return None


def _tokens(logprobs: Any) -> list[tuple[Token, tuple[Token, ...]]]:
    if not isinstance(logprobs, dict):
        return []
    if isinstance(logprobs.get("content"), list):  # chat: [{token, logprob, top_logprobs: [{token, logprob}]}]
        return [
            (
                Token(UNKNOWN_TOKEN_ID, str(c.get("token", "")), c.get("logprob")),
                tuple(Token(UNKNOWN_TOKEN_ID, str(t["token"]), t.get("logprob")) for t in c.get("top_logprobs") or ()),
            )
            for c in logprobs["content"]
        ]
    texts = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    out = []
    for i, text in enumerate(texts):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        ranked = sorted(top.items(), key=lambda kv: kv[1] if kv[1] is not None else float("-inf"), reverse=True)
        out.append(
            (
                Token(UNKNOWN_TOKEN_ID, str(text), values[i] if i < len(values) else None),
                tuple(Token(UNKNOWN_TOKEN_ID, str(t), lp) for t, lp in ranked),
            )
        )
    return out
