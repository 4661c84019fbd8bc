"""`/admin` in a browser, for admins only: users (create, change tier, disable), every token, the models with
their state, memory, replicas and live queue, and the errors this process answered lately. Each form posts back
its section, which htmx swaps in; the same store calls as the CLI and the `/admin/` JSON API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from infergate.gateway.auth import WebSession
from infergate.http.routes.ops import model_list
from infergate.http.state import get_state
from infergate.observability.recent import RecentError
from infergate.store.store import StoreError
from infergate.web.pages import page
from infergate.web.session import PageAnswer, checked_form, signed_in

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


async def _admin(request: Request) -> WebSession:
    """The signed-in admin (anyone else gets a 403 page; a browser not signed in is sent to sign in)."""
    web = await signed_in(request)
    if not web.principal.admin:
        raise PageAnswer(page(
            request, "error.html", web, 403, title="Admins only",
            message="These pages are for admins. An admin makes one with "
            "`infergate users create NAME --tier enterprise --admin`.",
        ))  # fmt: skip
    return web


def _tiers(request: Request) -> list[str]:
    return [t for t in get_state(request).gateway.tiers if t != "anonymous"]


async def _users(request: Request, web: WebSession, error: str | None = None) -> Response:
    users = await asyncio.to_thread(get_state(request).store.list_users)
    return page(request, "_admin_users.html", web, users=users, tiers=_tiers(request), error=error)


async def _tokens(request: Request, web: WebSession) -> Response:
    tokens = await asyncio.to_thread(get_state(request).store.list_all_tokens)
    return page(request, "_admin_tokens.html", web, tokens=tokens)


def _live(request: Request) -> dict[str, Any]:
    state = get_state(request)
    engines = state.gateway.engines()
    models = model_list(state.gateway)
    for m in models:
        engine = engines.get(m["id"])
        stats = engine.stats() if engine is not None else None
        m["active"] = stats.active if stats else 0
        m["waiting"] = stats.waiting if stats else 0
        m["kv_tokens"] = stats.cached_tokens if stats else 0
    return {"models": models, "errors": [_error_row(e) for e in state.errors.latest()]}


def _error_row(e: RecentError) -> dict[str, Any]:
    return {
        "when": datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "status": e.status,
        "method": e.method,
        "path": e.path,
        "model": e.model or "",
        "user": e.user or "",
        "message": e.message,
    }


@router.get("/admin")
async def admin(request: Request) -> Response:
    web = await _admin(request)
    store = get_state(request).store
    users = await asyncio.to_thread(store.list_users)
    tokens = await asyncio.to_thread(store.list_all_tokens)
    return page(
        request, "admin.html", web, users=users, tokens=tokens, tiers=_tiers(request), error=None, **_live(request)
    )


@router.get("/admin/live")
async def live(request: Request) -> Response:
    """The models, queues and errors section alone: the page refreshes it every few seconds."""
    web = await _admin(request)
    return page(request, "_admin_live.html", web, **_live(request))


@router.post("/admin/forms/users")
async def create_user(request: Request) -> Response:
    web = await _admin(request)
    form = await checked_form(request, web)
    name, tier = str(form.get("name") or "").strip(), str(form.get("tier") or "")
    if tier not in _tiers(request):
        return await _users(request, web, f"unknown tier {tier!r}")
    try:
        await asyncio.to_thread(get_state(request).store.create_user, name, tier, form.get("admin") == "on")
    except StoreError as exc:
        return await _users(request, web, str(exc))
    return await _users(request, web)


@router.post("/admin/forms/users/{name}")
async def change_user(name: str, request: Request) -> Response:
    """Change a user's tier (`tier`), or disable / enable it (`disabled` = "1" / "0")."""
    web = await _admin(request)
    form = await checked_form(request, web)
    state = get_state(request)
    try:
        if "tier" in form:
            tier = str(form["tier"])
            if tier not in _tiers(request):
                return await _users(request, web, f"unknown tier {tier!r}")
            await asyncio.to_thread(state.store.set_tier, name, tier)
        if "disabled" in form:
            if name == web.principal.user_name:
                return await _users(request, web, "you cannot disable yourself")
            await asyncio.to_thread(state.store.set_disabled, name, form["disabled"] == "1")
    except StoreError as exc:
        return await _users(request, web, str(exc))
    state.gateway.authenticator.forget()  # the change applies to this process's next request
    return await _users(request, web)


@router.post("/admin/forms/tokens/{token_id}/revoke")
async def revoke_token(token_id: int, request: Request) -> Response:
    web = await _admin(request)
    await checked_form(request, web)
    state = get_state(request)
    try:
        await asyncio.to_thread(state.store.revoke_token_id, token_id)
    except StoreError:
        pass  # already gone: the list shows what there is
    state.gateway.authenticator.forget()
    return await _tokens(request, web)
