"""Helpers every protocol shares: parse a wire model, and say what was wrong in words a user can act on."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic

from infergate.core.errors import ValidationError

__all__ = ["parse_wire"]

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
