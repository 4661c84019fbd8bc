"""Read a request body as JSON, with errors that say how to fix it."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from infergate.core.errors import BadRequestError

__all__ = ["read_json", "truthy_header"]

_EXAMPLE = '{"inputs": "Hello", "parameters": {"max_new_tokens": 20}}'


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise BadRequestError(
            f"the request body is empty; send JSON such as {_EXAMPLE} with Content-Type: application/json"
        )
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("text/plain"):
        return raw.decode("utf-8", errors="replace")  # the legacy API took a raw string as the inputs
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadRequestError(
            f"Failed to parse the request body as JSON: {reason}. Send a JSON object such as {_EXAMPLE}"
        ) from None
    where = _lone_surrogate(data, "")
    if where is not None:  # a lone surrogate escape is valid JSON but not text: no tokenizer takes it
        raise BadRequestError(
            f"`{where or 'body'}` contains a lone UTF-16 surrogate escape (such as \\ud800), which is not "
            "valid text; send valid UTF-8 strings"
        )
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string holding a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _lone_surrogate(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def truthy_header(request: Request, name: str) -> bool | None:
    """x-use-cache / x-wait-for-model: 1/true/yes or 0/false/no; None when absent or unreadable."""
    value = request.headers.get(name)
    if value is None:
        return None
    value = value.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None
