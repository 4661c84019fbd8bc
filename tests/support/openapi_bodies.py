"""Request bodies generated from `/openapi.json`, for the property tests that check the schema tells the truth
(tests/unit/test_openapi.py against the parsers, tests/e2e/test_openapi.py against the server).

Bodies are drawn from a component schema made small (short strings and lists, a few generated tokens): a
subset of what the schema allows, so every body must still be accepted. Rules that a JSON schema cannot state
(or that the schema's owner has not stated yet) are applied by ``FIXUPS``, one named function per rule: that
table is the list of what the schema does not say (plus the `_short` ones, which only keep generations to a
few tokens where a body leaves the length to the server's default).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

__all__ = ["FIXUPS", "bodies", "component", "refs"]

MAX_STRING = 24  # characters: a prompt of a few tokens, far below any model's input limit
MAX_ITEMS = 3
# Property -> the largest value drawn: generation stays short (the schema's own bound is the tier's limit).
GENERATED_TOKENS = 2
CAPS = {
    "max_new_tokens": GENERATED_TOKENS,
    "max_tokens": GENERATED_TOKENS,
    "max_completion_tokens": GENERATED_TOKENS,
    "n": 2,
    "truncate": 64,  # <= the model's max_input_tokens, which only GET /info knows
    "truncate_prompt_tokens": 64,  # the same rule, under vLLM's name on the OpenAI routes
    "dimensions": 16,  # <= the embedding model's dimension (384), which only the model knows
    "num_inference_steps": 2,
    "width": 64,
    "height": 64,
}


def refs(schema: Any) -> list[str]:
    """Every `$ref` in ``schema``."""
    if isinstance(schema, dict):
        return [v for k, v in schema.items() if k == "$ref"] + [r for v in schema.values() for r in refs(v)]
    if isinstance(schema, list):
        return [r for v in schema for r in refs(v)]
    return []


def component(openapi: dict[str, Any], name: str) -> dict[str, Any]:
    """The component ``name`` with its references inlined (the request schemas are not recursive)."""
    components = openapi["components"]["schemas"]

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = inline(components[node["$ref"].rsplit("/", 1)[1]])
                siblings = {k: inline(v) for k, v in node.items() if k != "$ref"}
                return {**target, **siblings}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result: dict[str, Any] = inline(components[name])
    return result


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Both schemas' keywords; a bound in both keeps the tighter one."""
    out = {**base, **extra}
    for key, pick in (("maximum", min), ("maxLength", min), ("maxItems", min), ("minimum", max)):
        if key in base and key in extra:
            out[key] = pick(base[key], extra[key])
    return out


def _small(node: Any, cap: int | None = None) -> Any:
    """Tighten the schema: short strings and lists, ``cap`` on the numbers of a capped property."""
    if isinstance(node, list):
        return [_small(v, cap) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _small(v, cap) if k in ("anyOf", "oneOf", "allOf", "items") else v for k, v in node.items()}
    if "properties" in out:
        out["properties"] = {name: _small(prop, CAPS.get(name)) for name, prop in out["properties"].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _small(out["additionalProperties"])
    kind = out.get("type")
    if kind == "string":
        out["maxLength"] = min(out.get("maxLength", MAX_STRING), MAX_STRING)
    if kind == "array":
        out["maxItems"] = min(out.get("maxItems", MAX_ITEMS), MAX_ITEMS)
    if kind in ("integer", "number") and cap is not None:
        out["maximum"] = min(out.get("maximum", cap), cap)
    return out


# Any JSON value, small: what an object's unknown keys hold.
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=6), inner, max_size=2),
    max_leaves=4,
)


def strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under ``schema``: the JSON schema subset pydantic writes for request models."""
    if "allOf" in schema:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged = _merge(merged, part)
        return strategy(merged)
    for key in ("anyOf", "oneOf"):  # the request schemas' unions are disjoint, so oneOf draws like anyOf
        if key in schema:
            rest = {k: v for k, v in schema.items() if k != key}
            return st.one_of([strategy(_merge(branch, rest)) for branch in schema[key]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([strategy({**schema, "type": k}) for k in kind])
    if kind is None:
        return _JSON
    return _BY_TYPE[kind](schema)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", MAX_STRING)
    if "pattern" in schema:
        # ECMA's `$` is the end of the string; Python's also matches before a final newline.
        pattern = re.sub(r"(?<!\\)\$", r"\\Z", schema["pattern"])
        return st.from_regex(pattern).filter(lambda s: low <= len(s) <= high)
    return st.text(min_size=low, max_size=high)


def _integer(schema: dict[str, Any]) -> st.SearchStrategy[int]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = max(low if low is not None else -(2**70), int(schema["exclusiveMinimum"]) + 1)
    if "exclusiveMaximum" in schema:
        high = min(high if high is not None else 2**70, -int(-schema["exclusiveMaximum"]) - 1)
    step = schema.get("multipleOf", 1)
    low = None if low is None else -(-low // step)  # floor division: exact for integers above 2**53
    high = None if high is None else high // step
    if low is not None and high is not None and low > high:
        return st.nothing()  # no integer in a number's range, such as (0, 1)
    return st.integers(None if low is None else int(low), None if high is None else int(high)).map(lambda k: k * step)


def _number(schema: dict[str, Any]) -> st.SearchStrategy[float | int]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    floats = st.floats(
        low,
        high,
        exclude_min="exclusiveMinimum" in schema,
        exclude_max="exclusiveMaximum" in schema,
        allow_nan=False,
        allow_infinity=False,
    )
    return floats | _integer(schema)  # a JSON number may be written without a fraction


def _array(schema: dict[str, Any]) -> st.SearchStrategy[list[Any]]:
    items = strategy(schema.get("items", {}))
    return st.lists(items, min_size=schema.get("minItems", 0), max_size=schema.get("maxItems", MAX_ITEMS))


@st.composite
def _object(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    out = {}
    for name, prop in properties.items():
        if name in required or draw(st.booleans()):
            out[name] = draw(strategy(prop))
    extra = schema.get("additionalProperties", True)
    if extra is not False:
        values = _JSON if extra is True else strategy(extra)
        names = st.text(min_size=1, max_size=10).filter(lambda k: k not in properties)
        out |= draw(st.dictionaries(names, values, max_size=2))
    return out


_BY_TYPE: dict[str, Callable[[dict[str, Any]], st.SearchStrategy[Any]]] = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": lambda _: st.booleans(),
    "null": lambda _: st.none(),
    "array": _array,
    "object": _object,
}


def _tgi_short(body: dict[str, Any], route: str) -> None:
    """Generation size: a few tokens when the body leaves it to the default (20)."""
    if not isinstance(body.get("parameters"), dict):
        body["parameters"] = {}
    if body["parameters"].get("max_new_tokens") is None:
        body["parameters"]["max_new_tokens"] = GENERATED_TOKENS


def _openai_short(body: dict[str, Any], route: str) -> None:
    """Generation size: a few tokens when the body leaves it to the default (the model's whole context for a
    chat)."""
    if not body.get("max_tokens") and not body.get("max_completion_tokens"):
        body["max_tokens"] = GENERATED_TOKENS


def _tgi_best_of(body: dict[str, Any], route: str) -> None:
    """best_of > 1 needs sampling and no seed, and does not stream (TGI's rules, checked across fields)."""
    params = body.get("parameters")
    if isinstance(params, dict) and (params.get("best_of") or 1) > 1:
        if route == "/generate_stream" or body.get("stream") is True:
            params["best_of"] = None
        else:
            params |= {"do_sample": True, "seed": None}


def _tgi_streaming_details(body: dict[str, Any], route: str) -> None:
    """decoder_input_details is refused when streaming."""
    params = body.get("parameters")
    if isinstance(params, dict) and (route == "/generate_stream" or body.get("stream") is True):
        params["decoder_input_details"] = None


def _embedding_prompt_name(body: dict[str, Any], route: str) -> None:
    """prompt_name must be one of the model's prompts (the model's config, not the schema, knows them)."""
    body.pop("prompt_name", None)
    if isinstance(body.get("parameters"), dict):
        body["parameters"].pop("prompt_name", None)


def _served_model(body: dict[str, Any], route: str) -> None:
    """`model` must name a served model of the route's kind (or be left out)."""
    body.pop("model", None)


# The OpenAI models (protocols/openai/schemas.py) do not state these rules yet; they could as JSON schema.
def _openai_stop(body: dict[str, Any], route: str) -> None:
    """At most 4 stop sequences (maxItems)."""
    if isinstance(body.get("stop"), list):
        body["stop"] = body["stop"][:4]


def _openai_logit_bias(body: dict[str, Any], route: str) -> None:
    """logit_bias keys are token ids (propertyNames pattern ^-?[0-9]+$)."""
    if isinstance(body.get("logit_bias"), dict):
        body["logit_bias"] = {str(i): v for i, v in enumerate(body["logit_bias"].values())}


def _openai_unsupported(body: dict[str, Any], route: str) -> None:
    """No tools or response_format (drawn at random they are refused by checks of their own, tested elsewhere),
    best_of 1 (not supported by this server)."""
    for name in ("tools", "tool_choice", "response_format", "guided_json", "guided_regex", "guided_choice"):
        body.pop(name, None)
    for name in ("guided_grammar", "structured_outputs", "grammar", "best_of"):
        body.pop(name, None)


def _openai_top_logprobs(body: dict[str, Any], route: str) -> None:
    """top_logprobs > 0 needs logprobs: true (across fields)."""
    if body.get("top_logprobs"):
        body["logprobs"] = True


def _openai_prompts(body: dict[str, Any], route: str) -> None:
    """Token ids must be in the model's vocabulary (the model, not the schema, knows its size)."""

    def in_vocabulary(value: Any) -> Any:
        if isinstance(value, list):
            return [in_vocabulary(v) for v in value]
        return value % 1000 if isinstance(value, int) and not isinstance(value, bool) else value

    body["prompt"] = in_vocabulary(body.get("prompt"))


def _tgi_grammar(body: dict[str, Any], route: str) -> None:
    """A drawn grammar's value is random text or a random object, which seldom compiles (that 422 is tested in
    test_structured.py): keep its type, with a value that compiles."""
    grammar = (body.get("parameters") or {}).get("grammar")
    if isinstance(grammar, dict):
        grammar["value"] = "[a-z]{1,4}" if grammar.get("type") == "regex" else {"type": "object"}


def _infill_model(body: dict[str, Any], route: str) -> None:
    """`suffix` needs a model with infill tokens (GET /v1/models says which: `infill`); the test model has none."""
    body.pop("suffix", None)


FIXUPS: dict[str, list[Callable[[dict[str, Any], str], None]]] = {
    "GenerateRequest": [_tgi_short, _tgi_best_of, _tgi_streaming_details, _tgi_grammar],
    "FeatureExtractionRequest": [_embedding_prompt_name],
    "EmbeddingsRequest": [_served_model],
    "TokenizeRequest": [_served_model],
    "ChatCompletionRequest": [
        _openai_short,
        _served_model,
        _openai_stop,
        _openai_logit_bias,
        _openai_unsupported,
        _openai_top_logprobs,
    ],
    "CompletionRequest": [
        _openai_short,
        _served_model,
        _openai_stop,
        _openai_logit_bias,
        _openai_unsupported,
        _openai_prompts,
        _infill_model,
    ],
}


def bodies(openapi: dict[str, Any], name: str, route: str = "") -> st.SearchStrategy[dict[str, Any]]:
    """Small bodies valid under component ``name``, with the rules the schema does not state applied."""
    schema = _small(component(openapi, name))

    def fix(body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        for fixup in FIXUPS.get(name, []):
            fixup(body, route)
        return body

    return strategy(schema).map(fix)
