"""What the client scripts run in venvs of their own share (tests/clients/NAME/run.py): each imports this file
by path, since those venvs do not have the test package."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def attempt(results: dict[str, Any], name: str, call: Callable[[], Any]) -> None:
    """Record what ``call`` returned under ``name``, or the error it raised, and how long it took."""
    start = time.monotonic()
    try:
        results[name] = call()
    except Exception as e:  # noqa: BLE001 - the JSON reports every failure by its type
        results[name] = {"error": f"{type(e).__name__}: {e}"}
    results.setdefault("seconds", {})[name] = round(time.monotonic() - start, 2)
