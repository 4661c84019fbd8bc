"""Signing a browser in and out, and the CSRF checks of every form.

A session is a random id in an httpOnly, SameSite=Lax cookie (page scripts never see it; only its SHA-256 is
stored, as for API tokens). Each session has a CSRF token, rendered into the pages: every form posts it back,
and the playground's API calls send it in the `X-CSRF-Token` header. The sign-in form, before any session
exists, is protected by a double-submit cookie instead.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from infergate.gateway.auth import WebSession
from infergate.http.state import CSRF_HEADER, SESSION_COOKIE, get_state
from infergate.store.records import UserInfo
from infergate.store.store import hash_token
from infergate.web.config import get_web

__all__ = [
    "LOGIN_CSRF_COOKIE",
    "CsrfRefused",
    "PageAnswer",
    "checked_form",
    "current",
    "end",
    "login_csrf",
    "safe_next",
    "sign_in",
    "signed_in",
    "to_login",
]

LOGIN_CSRF_COOKIE = "ig_login_csrf"


class CsrfRefused(Exception):
    """A form or call without the session's CSRF token: not sent by one of this server's pages."""


class PageAnswer(Exception):
    """A page's early answer (sign in first; not for you), sent as it is."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def current(request: Request) -> WebSession | None:
    """The signed-in user of this browser, or None."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    return await get_state(request).gateway.authenticator.session(session_id)


async def signed_in(request: Request) -> WebSession:
    """The signed-in user; a browser that is not signed in is sent to sign in, and back here after."""
    web = await current(request)
    if web is None:
        raise PageAnswer(to_login(request))
    return web


async def checked_form(request: Request, web: WebSession) -> FormData:
    """The posted form, once its CSRF token (field `csrf`, or the header htmx sends) is the session's."""
    form = await request.form()
    given = form.get("csrf") or request.headers.get(CSRF_HEADER) or ""
    if not isinstance(given, str) or not hmac.compare_digest(given, web.csrf):
        raise CsrfRefused
    return form


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server only (never another host)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/account"


def to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def login_csrf(request: Request) -> str:
    """The double-submit value for the sign-in form: the cookie's, or a new one (set by `with_login_csrf`)."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)


async def sign_in(request: Request, user: UserInfo, target: str) -> Response:
    """Start a session for ``user`` and send the browser on to ``target``."""
    state, web = get_state(request), get_web(request)
    session_id, _ = await asyncio.to_thread(state.store.create_session, user.id, web.session_ttl_s)
    response = RedirectResponse(safe_next(target), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(web.session_ttl_s),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


async def end(request: Request) -> None:
    """Sign this browser out: the session row goes, and this process forgets it at once."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        state = get_state(request)
        await asyncio.to_thread(state.store.end_session, hash_token(session_id))
        state.gateway.authenticator.forget()
