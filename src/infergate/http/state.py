"""What route handlers need, as one typed object (no attribute bag on app.state)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from infergate.gateway.gateway import Gateway

__all__ = ["AppState", "get_state"]


@dataclass
class AppState:
    gateway: Gateway
    max_body_bytes: int
    version: str
    started: float = field(default_factory=time.monotonic)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.infergate
    return state
