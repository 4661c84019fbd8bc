"""What route handlers need, as one typed object (no attribute bag on app.state)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from infergate.gateway.gateway import Gateway, Ticket
from infergate.store.store import Store

__all__ = ["AppState", "admit", "client_address", "get_state"]


@dataclass
class AppState:
    gateway: Gateway
    store: Store
    max_body_bytes: int
    version: str
    started: float = field(default_factory=time.monotonic)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.infergate
    return state


def client_address(request: Request) -> str:
    """Who an anonymous caller is, for their limits."""
    return request.client.host if request.client else "unknown"


async def admit(request: Request, model_id: str | None, wait: bool, task: str = "text-generation") -> Ticket:
    """Authenticate, check the model serves ``task``, gate, count and wait for the model; the ticket rides on
    the request for accounting."""
    gateway = get_state(request).gateway
    ticket = await gateway.open(request.headers.get("authorization"), client_address(request), model_id, task)
    request.state.ticket = ticket
    await gateway.admit(ticket, wait)
    return ticket
