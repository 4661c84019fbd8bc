"""Helpers every protocol shares: parse a wire model, say what was wrong in words a user can act on, and the
pieces of the documented request bodies (`/openapi.json`) that several protocols use."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from infergate.core.errors import ValidationError

__all__ = ["Doc", "InferenceOptions", "NonBlank", "OptionsField", "omit_null_defaults", "parse_wire"]

M = TypeVar("M", bound=pydantic.BaseModel)


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "body"
    if error["type"] == "missing":
        return f"`{where}` is required"
    got = error.get("input")
    got_s = f" (got {type(got).__name__} {got!r})" if error["type"].endswith("_type") else ""
    return f"`{where}`: {error['msg']}{got_s}"


# The labels pydantic puts in a location for the branch of a union it tried ("prompt.list[int]").
_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "tuple"})


def _param(loc: tuple[Any, ...]) -> str | None:
    """A pydantic location as OpenAI names a parameter: ``messages[0].content``."""
    if not loc:
        return None
    out = str(loc[0])
    for part in loc[1:]:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and part not in _TYPE_LABELS and not part[0].isupper():  # not a union branch
            out += f".{part}"
    return out


def parse_wire(model: type[M], data: Any, example: str) -> M:
    """Validate ``data`` against ``model``; raise ValidationError naming every bad field and an example body
    (its ``param`` is the first bad field)."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems = "; ".join(_describe(e) for e in errors[:5])
        raise ValidationError(f"{problems}. Expected a body like {example}", param=_param(errors[0]["loc"])) from None


class Doc(BaseModel):
    """Base of the models that only document a body which a hand-written parser reads (the parser's own
    messages stay as they are); `tests/unit/test_openapi_bodies.py` checks that what they allow is accepted.
    Unknown keys are ignored, as the parsers do."""

    model_config = ConfigDict(extra="ignore")


def omit_null_defaults(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` for a model whose fields may be left out but not sent as null: "default: null"
    would contradict their types."""
    for prop in schema.get("properties", {}).values():
        if prop.get("default", ...) is None:
            del prop["default"]


# A string with something other than whitespace in it (the parsers' `inputs.strip()` check).
NonBlank = Annotated[str, StringConstraints(pattern=r"\S")]


class InferenceOptions(BaseModel):
    """The HF task API's `options`: how to serve the call, not what to compute (a value of another type is
    ignored)."""

    model_config = ConfigDict(extra="allow", title="InferenceOptions")
    use_cache: bool | None = Field(
        None, description="false: compute afresh instead of answering from the result cache (header x-use-cache wins)"
    )
    wait_for_model: bool | None = Field(
        None,
        description="false: a 503 with `estimated_time` at once while the model loads, instead of waiting for it "
        "(the default; header x-wait-for-model wins)",
    )


# `options` as the parsers read it (a plain dict), documented as InferenceOptions.
OptionsField = Annotated[
    dict[str, Any] | None,
    WithJsonSchema({"anyOf": [InferenceOptions.model_json_schema(), {"type": "null"}]}),
]
