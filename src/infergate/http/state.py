"""What route handlers need, as one typed object (no attribute bag on app.state)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from infergate.gateway.auth import SessionKey
from infergate.gateway.gateway import Gateway, Ticket
from infergate.gateway.principal import Principal
from infergate.observability.recent import RecentErrors
from infergate.store.store import Store

__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "AppState", "admit", "authenticate", "client_address", "get_state"]

# The web pages' sign-in (httpOnly, so page scripts never see it) and the header their own API calls add.
SESSION_COOKIE = "ig_session"
CSRF_HEADER = "x-csrf-token"


@dataclass
class AppState:
    gateway: Gateway
    store: Store
    max_body_bytes: int
    version: str
    started: float = field(default_factory=time.monotonic)
    errors: RecentErrors = field(default_factory=RecentErrors)  # the admin page's "recent errors"
    pages: bool = False  # the web pages are served (a browser asking for / is sent to the playground)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.infergate
    return state


def client_address(request: Request) -> str:
    """Who an anonymous caller is, for their limits."""
    return request.client.host if request.client else "unknown"


def _session_key(request: Request) -> SessionKey | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    return SessionKey(session_id, request.headers.get(CSRF_HEADER)) if session_id else None


async def authenticate(request: Request) -> Principal:
    """Who sent the request: its bearer token, a signed-in page's session (with its CSRF header), or nobody."""
    gateway = get_state(request).gateway
    authorization = request.headers.get("authorization")
    return await gateway.authenticate(authorization, client_address(request), _session_key(request))


async def admit(request: Request, model_id: str | None, wait: bool, task: str = "text-generation") -> Ticket:
    """Authenticate, check the model serves ``task``, gate, count and wait for the model; the ticket rides on
    the request for accounting."""
    gateway = get_state(request).gateway
    ticket = await gateway.open(
        request.headers.get("authorization"), client_address(request), model_id, task, _session_key(request)
    )
    request.state.ticket = ticket
    await gateway.admit(ticket, wait)
    return ticket
