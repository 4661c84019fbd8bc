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


def parse_wire(model: type[M], data: Any, example: str) -> M:
    """Validate ``data`` against ``model``; raise ValidationError naming every bad field and an example body."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors(include_url=False)[:5])
        raise ValidationError(f"{problems}. Expected a body like {example}") from None
