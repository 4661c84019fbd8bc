"""The x-compute-* headers every inference response carries (the hosted API's and TGI's names)."""

from __future__ import annotations

import time

__all__ = ["compute_headers"]


def compute_headers(
    compute_type: str,
    started: float,
    characters: int,
    prompt_tokens: int | None = None,
    generated_tokens: int | None = None,
) -> dict[str, str]:
    headers = {
        "x-compute-type": compute_type,
        "x-compute-time": f"{time.perf_counter() - started:.3f}",
        "x-compute-characters": str(characters),
    }
    if prompt_tokens is not None:
        headers["x-prompt-tokens"] = str(prompt_tokens)
    if generated_tokens is not None:
        headers["x-generated-tokens"] = str(generated_tokens)
    return headers
