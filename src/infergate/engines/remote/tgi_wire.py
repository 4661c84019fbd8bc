"""Sans-IO adapter for TGI's `/generate_stream` (and `/generate`), which another infergate in engine mode serves
too, under `/models/{id}/`.

TGI has no `min_p`, `presence_penalty`, `logit_bias` or `ignore_eos`: a request that sets one is a 422 saying so,
never a silent drop. TGI keeps the stop sequence in the text; the engine trims it when the caller asked OpenAI's
way. `decoder_input_details` works only without streaming in TGI, so such a request goes to `/generate`.
"""

from __future__ import annotations

import json
from typing import Any

from infergate.core.errors import ValidationError
from infergate.core.outputs import Token
from infergate.core.requests import GenerationRequest, Grammar
from infergate.engines.remote.openai_wire import Piece

__all__ = ["build_generation", "grammar_param", "parse_event", "parse_response"]


def build_generation(request: GenerationRequest, prefix: str) -> tuple[str, dict[str, Any]]:
    """The path (under ``prefix``: "" for TGI, "/models/ID" for infergate) and body of one generation."""
    s, stop = request.sampling, request.stopping
    refused = [
        name
        for name, value in (
            ("min_p", s.min_p > 0.0),
            ("presence_penalty", bool(s.presence_penalty)),
            ("logit_bias", bool(s.logit_bias)),
            ("ignore_eos", stop.ignore_eos),
            ("prompt token ids", request.prompt_ids is not None),
        )
        if value
    ]
    if refused:
        raise ValidationError(
            f"this model is served by a TGI engine, which cannot apply {', '.join(refused)}; leave "
            f"{'it' if len(refused) == 1 else 'them'} out",
            param=refused[0] if refused[0] != "prompt token ids" else "prompt",
        )
    params: dict[str, Any] = {"details": True, "return_full_text": False, "do_sample": s.do_sample}
    if stop.max_new_tokens is not None:
        params["max_new_tokens"] = stop.max_new_tokens
    if s.do_sample:
        params["temperature"] = s.temperature
        if s.top_k is not None:
            params["top_k"] = s.top_k
        if s.top_p < 1.0:
            params["top_p"] = s.top_p
        if s.typical_p < 1.0:
            params["typical_p"] = s.typical_p
    if s.repetition_penalty != 1.0:
        params["repetition_penalty"] = s.repetition_penalty
    if s.frequency_penalty:
        params["frequency_penalty"] = s.frequency_penalty
    if s.seed is not None:
        params["seed"] = s.seed
    if stop.stop:
        params["stop"] = list(stop.stop)
    if request.truncate is not None:
        params["truncate"] = request.truncate
    if request.top_n_tokens:
        params["top_n_tokens"] = request.top_n_tokens
    if request.grammar is not None:
        params["grammar"] = grammar_param(request.grammar)
    body: dict[str, Any] = {"inputs": request.prompt, "parameters": params}
    if request.prefill_details:
        params["decoder_input_details"] = True
        return f"{prefix}/generate", body
    return f"{prefix}/generate_stream", body


def grammar_param(grammar: Grammar) -> dict[str, Any]:
    """TGI's grammar parameter: a JSON schema or a regex (TGI takes no other grammars)."""
    if grammar.kind == "json":
        return {"type": "json", "value": json.loads(grammar.value)}
    if grammar.kind == "regex":
        return {"type": "regex", "value": grammar.value}
    raise ValidationError(
        f"this model is served by a TGI engine, whose grammars are JSON schemas and regexes, not {grammar.kind}; "
        "send a JSON schema or a regex",
        param="grammar",
    )


def _token(raw: dict[str, Any]) -> Token:
    return Token(int(raw.get("id", -1)), str(raw.get("text", "")), raw.get("logprob"), bool(raw.get("special")))


def parse_event(event: dict[str, Any]) -> Piece:
    """One `/generate_stream` event. A special token (EOS) adds no text, as in TGI's `generated_text`."""
    token = _token(event["token"])
    top = tuple(_token(t) for t in event.get("top_tokens") or ())
    details = event.get("details") or {}
    finish = details.get("finish_reason") if event.get("generated_text") is not None else None
    if event.get("generated_text") is not None and finish is None:
        finish = "length"
    prompt_tokens = details.get("input_length")
    return Piece(
        "" if token.special else token.text,
        token,
        top,
        finish,
        int(prompt_tokens) if prompt_tokens is not None else None,
        details.get("generated_tokens"),
    )


def parse_response(payload: Any) -> tuple[int, list[Token], list[Piece]]:
    """A `/generate` answer with details: the prompt's length, its tokens, and the generated pieces."""
    if isinstance(payload, list):
        payload = payload[0]
    details = payload.get("details") or {}
    prefill = [_token(t) for t in details.get("prefill") or ()]
    tokens = details.get("tokens") or []
    tops = details.get("top_tokens") or []
    pieces = [
        Piece(
            "" if t.get("special") else str(t.get("text", "")),
            _token(t),
            tuple(_token(x) for x in (tops[i] if i < len(tops) else ())),
        )
        for i, t in enumerate(tokens)
    ]
    finish = details.get("finish_reason", "length")
    if pieces:
        last = pieces.pop()
        pieces.append(Piece(last.text, last.token, last.top, finish))
    return len(prefill), prefill, pieces
