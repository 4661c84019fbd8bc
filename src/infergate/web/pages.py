"""The signed-in user's pages: sign-in and sign-out, the account page (tier, limits left, tokens, usage) and the
playground. Each page reads the same state the API uses: the gateway's tiers and counters, the store."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from infergate.core.errors import UnauthorizedError
from infergate.gateway.auth import WebSession
from infergate.http.state import client_address, get_state
from infergate.store.records import DailyUsageRow
from infergate.web.charts import bar_chart
from infergate.web.config import get_web
from infergate.web.session import (
    LOGIN_CSRF_COOKIE,
    checked_form,
    current,
    end,
    login_csrf,
    safe_next,
    sign_in,
    signed_in,
)

__all__ = ["page", "router"]

router = APIRouter(include_in_schema=False)

_USAGE_DAYS = 14


def page(request: Request, name: str, web: WebSession | None, status: int = 200, **context: Any) -> Response:
    """A template with what every page needs: who is signed in and the CSRF token their forms carry."""
    return get_web(request).templates.TemplateResponse(
        request, name, {"web": web, "csrf": web.csrf if web else "", **context}, status_code=status
    )


# -- sign-in ------------------------------------------------------------------------------------------------
def _login_page(request: Request, target: str | None, error: str | None = None, status: int = 200) -> Response:
    token = login_csrf(request)
    response = page(
        request, "login.html", None, status, login_csrf=token, next=safe_next(target), error=error,
        sso=get_web(request).sso,
    )  # fmt: skip
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="lax", path="/", max_age=3600)
    return response


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    if await current(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    target = str(form.get("next") or "")
    given, expected = str(form.get("csrf") or ""), request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not expected or given != expected:
        return _login_page(request, target, "The sign-in form expired; it is reloaded, please try again.", 403)
    token = str(form.get("token") or "").strip()
    state = get_state(request)
    try:
        principal = await state.gateway.authenticator.authenticate(f"Bearer {token}", client_address(request))
    except UnauthorizedError as exc:
        return _login_page(request, target, exc.message, 401)
    if principal.user_name is None:
        return _login_page(
            request, target, "That is not a token of this server: infergate tokens start with ig_. "
            "An admin creates one with `infergate tokens create NAME`.", 401,
        )  # fmt: skip
    user = await asyncio.to_thread(state.store.get_user, principal.user_name)
    if user is None:
        return _login_page(request, target, "This token's user no longer exists; ask an admin.", 401)
    return await sign_in(request, user, target)


@router.post("/logout")
async def logout(request: Request) -> Response:
    web = await current(request)
    if web is not None:
        await checked_form(request, web)
        await end(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie("ig_session", path="/")
    return response


# -- account ------------------------------------------------------------------------------------------------
@router.get("/account")
async def account(request: Request) -> Response:
    web = await signed_in(request)
    state = get_state(request)
    p = web.principal
    assert p.user_name is not None
    tier = state.gateway.tiers[p.tier]
    standing = {q.policy: q for q in await state.gateway.standing(p)}
    tokens = await asyncio.to_thread(state.store.list_tokens, p.user_name)
    await state.gateway.flush_usage()  # the requests just made are in the charts
    daily = await asyncio.to_thread(state.store.usage_daily, p.user_name, _USAGE_DAYS)
    models = [s for s in state.gateway.catalog if s.tiers is None or p.tier in s.tiers]
    return page(
        request, "account.html", web, tier=tier, standing=standing, tokens=tokens, new_token=None,
        models=models, usage=daily, **_charts(daily),
    )  # fmt: skip


def _charts(daily: list[DailyUsageRow]) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in range(_USAGE_DAYS - 1, -1, -1)]
    per_day = {d: 0 for d in days}
    per_model: dict[str, int] = {}
    tokens_per_model: dict[str, int] = {}
    for row in daily:
        per_day[row.day] = per_day.get(row.day, 0) + row.requests
        per_model[row.model] = per_model.get(row.model, 0) + row.requests
        tokens_per_model[row.model] = tokens_per_model.get(row.model, 0) + row.prompt_tokens + row.generated_tokens
    return {
        "day_chart": bar_chart(
            [(d.strftime("%m-%d"), per_day[d]) for d in days] if daily else [],
            title=f"Requests per day, last {_USAGE_DAYS} days (UTC)",
            unit="requests",
        ),
        "model_chart": bar_chart(
            sorted(per_model.items()), title=f"Requests per model, last {_USAGE_DAYS} days", unit="requests"
        ),
        "token_chart": bar_chart(
            sorted(tokens_per_model.items()), title="Tokens (prompt + generated) per model", unit="tokens"
        ),
    }


async def _tokens_section(request: Request, web: WebSession, new_token: str | None, status: int = 200) -> Response:
    assert web.principal.user_name is not None
    tokens = await asyncio.to_thread(get_state(request).store.list_tokens, web.principal.user_name)
    return page(request, "_tokens.html", web, status, tokens=tokens, new_token=new_token)


@router.post("/account/tokens")
async def create_token(request: Request) -> Response:
    web = await signed_in(request)
    await checked_form(request, web)
    assert web.principal.user_name is not None
    token, _ = await asyncio.to_thread(get_state(request).store.create_token, web.principal.user_name)
    response = await _tokens_section(request, web, token)
    response.headers["Cache-Control"] = "no-store"  # the token is shown once
    return response


@router.post("/account/tokens/{token_id}/revoke")
async def revoke_token(token_id: int, request: Request) -> Response:
    web = await signed_in(request)
    await checked_form(request, web)
    state = get_state(request)
    await asyncio.to_thread(state.store.revoke_token_id, token_id, web.principal.user_name)
    state.gateway.authenticator.forget()  # refused at once by this process
    return await _tokens_section(request, web, None)


@router.get("/account/usage.csv")
async def usage_csv(request: Request, days: int = 90) -> Response:
    web = await signed_in(request)
    state = get_state(request)
    assert web.principal.user_name is not None
    await state.gateway.flush_usage()
    rows = await asyncio.to_thread(state.store.usage_daily, web.principal.user_name, max(1, min(days, 3660)))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", "model", "requests", "prompt_tokens", "generated_tokens", "cache_hits", "errors"])
    for r in rows:
        writer.writerow([r.day.isoformat(), r.model, r.requests, r.prompt_tokens, r.generated_tokens, r.cache_hits,
                         r.errors])  # fmt: skip
    name = f"infergate-usage-{web.principal.user_name}.csv"
    return Response(
        out.getvalue(), media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


# -- playground ---------------------------------------------------------------------------------------------
@router.get("/playground")
async def playground(request: Request) -> Response:
    web = await signed_in(request)
    gateway = get_state(request).gateway
    tier = web.principal.tier
    models = [
        {
            "id": spec.id,
            "task": spec.task,
            "allowed": spec.tiers is None or tier in spec.tiers,
            "tiers": list(spec.tiers) if spec.tiers is not None else [],
        }
        for spec in gateway.catalog
        if spec.id in gateway.engines()
    ]
    return page(request, "playground.html", web, models=models, max_new_tokens=gateway.tiers[tier].max_new_tokens)
