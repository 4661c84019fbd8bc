"""The shapes callers ask answers to take, in each protocol's words, as one core Grammar.

TGI's ``grammar`` (``{"type": "json" | "json_object" | "json_schema" | "regex", "value": ...}``, also what
huggingface_hub sends as a chat's ``response_format``), OpenAI's ``response_format`` (``json_object``,
``json_schema``), and vLLM's ``guided_json`` / ``guided_regex`` / ``guided_choice`` / ``guided_grammar`` and
``structured_outputs``. Whether a grammar compiles is the engine's to say (it knows the vocabulary).
"""

from __future__ import annotations

import json
from typing import Any

from infergate.core.errors import ValidationError
from infergate.core.requests import Grammar

__all__ = ["any_object", "choice_grammar", "schema_grammar", "text_grammar", "tgi_grammar"]
_TGI_FORM = '{"type": "json", "value": {...a JSON schema...}} or {"type": "regex", "value": "..."}'


def any_object(param: str) -> Grammar:
    """Any JSON object (OpenAI's `json_object`)."""
    return Grammar("json", '{"type": "object"}', param)


def schema_grammar(schema: Any, param: str) -> Grammar:
    """A JSON schema, sent as an object or as JSON text (TGI takes both)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise ValidationError(
                f"`{param}` is not valid JSON: {exc}; send the schema as a JSON object", param
            ) from exc
    if not isinstance(schema, dict | bool):
        raise ValidationError(f"`{param}` must be a JSON schema (an object); got {json.dumps(schema)[:80]}", param)
    return Grammar("json", json.dumps(schema), param)


def text_grammar(kind: str, value: Any, param: str) -> Grammar:
    """A regular expression, or a grammar in Lark (llguidance's dialect) or GBNF (llama.cpp's, as vLLM takes)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"`{param}` must be a non-empty string", param)
    if kind == "grammar":
        kind = "gbnf" if "::=" in value else "lark"
    return Grammar(kind, value, param)


def choice_grammar(choices: Any, param: str) -> Grammar:
    """One of the given strings, exactly."""
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValidationError(f"`{param}` must be a non-empty list of non-empty strings", param)
    return Grammar("lark", "start: " + " | ".join(json.dumps(c) for c in choices), param)


def tgi_grammar(grammar: Any, param: str = "grammar") -> Grammar:
    """TGI's grammar parameter."""
    if not isinstance(grammar, dict) or "type" not in grammar:
        raise ValidationError(f"grammar is not valid: `{param}` must be like {_TGI_FORM}", param)
    kind, value = grammar["type"], grammar.get("value")
    if kind in ("json", "json_object"):
        return any_object(param) if value is None and kind == "json_object" else schema_grammar(value, param)
    if kind == "json_schema":  # {"name": ..., "schema": {...}}
        schema = value.get("schema") if isinstance(value, dict) and "schema" in value else value
        return schema_grammar(schema, param)
    if kind == "regex":
        return text_grammar("regex", value, param)
    raise ValidationError(
        f'grammar is not valid: unknown type {json.dumps(kind)[:40]}; use "json", "json_object", "json_schema" or '
        '"regex"',
        param,
    )
