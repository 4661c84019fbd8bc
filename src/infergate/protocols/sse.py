"""Server-Sent Events framing. ``data: `` always has its space: huggingface_hub only knows `data: [DONE]`."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DONE", "event"]

DONE = b"data: [DONE]\n\n"


def event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
