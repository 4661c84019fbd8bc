"""`/admin/`: the CLI's account operations over HTTP, for admin tokens only."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from infergate.core.errors import BadRequestError, ForbiddenError, NotFoundError
from infergate.http.body import read_json
from infergate.http.openapi import json_body
from infergate.http.state import authenticate, get_state
from infergate.protocols.wire import parse_wire
from infergate.store.store import Store, StoreConflict, StoreError, StoreNotFound

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["admin"])


class NewUser(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"name": "alice", "tier": "pro"}]}
    )
    name: str
    tier: str = Field("free", description="one of the configured tiers (not anonymous)")
    admin: bool = False


class UserChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"tier": "pro"}, {"disabled": True}]}
    )
    tier: str | None = Field(None, description="one of the configured tiers (not anonymous)")
    disabled: bool | None = Field(None, description="true refuses the user's tokens and sessions; false lets it in")


class RevokeToken(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    token: str


async def _store(request: Request) -> Store:
    state = get_state(request)
    principal = await authenticate(request)
    if not principal.admin:
        raise ForbiddenError(
            "The admin API needs an admin's token; create one on the server with "
            "`infergate users create NAME --tier enterprise --admin` and `infergate tokens create NAME`."
        )
    return state.store


def _check_tier(request: Request, tier: str) -> None:
    tiers = [t for t in get_state(request).gateway.tiers if t != "anonymous"]
    if tier not in tiers:
        raise BadRequestError(f"unknown tier {tier!r}; the tiers are {', '.join(tiers)}")


async def _call(fn: Any, *args: Any) -> Any:
    """Store calls are blocking: run them in a thread and turn store errors into client errors."""
    try:
        return await asyncio.to_thread(fn, *args)
    except StoreNotFound as exc:
        raise NotFoundError(str(exc)) from exc
    except (StoreConflict, StoreError) as exc:
        raise BadRequestError(str(exc)) from exc


def _json(record: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(record).items()}


@router.get("/users")
async def list_users(request: Request) -> list[dict[str, Any]]:
    store = await _store(request)
    return [_json(u) for u in await _call(store.list_users)]


@router.post("/users", status_code=201, openapi_extra=json_body(NewUser))
async def create_user(request: Request) -> dict[str, Any]:
    store = await _store(request)
    new = parse_wire(NewUser, await read_json(request), '{"name": "alice", "tier": "pro"}')
    _check_tier(request, new.tier)
    return _json(await _call(store.create_user, new.name, new.tier, new.admin))


@router.patch("/users/{name}", openapi_extra=json_body(UserChange))
async def change_user(name: str, request: Request) -> dict[str, Any]:
    store = await _store(request)
    change = parse_wire(UserChange, await read_json(request), '{"tier": "pro"} or {"disabled": true}')
    if change.tier is None and change.disabled is None:
        raise BadRequestError('nothing to change: send {"tier": "pro"}, {"disabled": true} or both')
    user = None
    if change.tier is not None:
        _check_tier(request, change.tier)
        user = await _call(store.set_tier, name, change.tier)
    if change.disabled is not None:
        user = await _call(store.set_disabled, name, change.disabled)
    get_state(request).gateway.authenticator.forget()  # the change applies at once
    return _json(user)


@router.post("/users/{name}/tokens", status_code=201)
async def create_token(name: str, request: Request) -> JSONResponse:
    store = await _store(request)
    token, info = await _call(store.create_token, name)
    # Shown once: only its hash is stored.
    return JSONResponse({"token": token, **_json(info)}, status_code=201, headers={"Cache-Control": "no-store"})


@router.get("/users/{name}/tokens")
async def list_tokens(name: str, request: Request) -> list[dict[str, Any]]:
    store = await _store(request)
    return [_json(t) for t in await _call(store.list_tokens, name)]


@router.post("/tokens/revoke", openapi_extra=json_body(RevokeToken))
async def revoke_token(request: Request) -> dict[str, Any]:
    store = await _store(request)
    token = parse_wire(RevokeToken, await read_json(request), '{"token": "ig_..."}').token
    info = await _call(store.revoke_token, token)
    get_state(request).gateway.authenticator.forget()  # revoked at once, not after the cache's TTL
    return _json(info)


@router.get("/usage")
async def usage(request: Request, user: str | None = None) -> list[dict[str, Any]]:
    store = await _store(request)
    await get_state(request).gateway.flush_usage()
    return [asdict(row) for row in await _call(store.usage_summary, user)]
