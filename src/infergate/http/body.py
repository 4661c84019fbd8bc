"""Read a request body as JSON, with errors that say how to fix it."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from infergate.core.errors import BadRequestError

__all__ = ["read_json", "truthy_header"]


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise BadRequestError(
            'the request body is empty; send JSON such as {"inputs": "Hello"} with Content-Type: application/json'
        )
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("text/plain"):
        return raw.decode("utf-8", errors="replace")  # the legacy API took a raw string as the inputs
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(
            f"Failed to parse the request body as JSON: {exc}. Send a JSON object such as "
            '{"inputs": "Hello", "parameters": {"max_new_tokens": 20}}'
        ) from None


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
