"""Enterprise sign-in with OpenID Connect: the authorization code flow with PKCE (S256), `state` and `nonce`.

`GET /login/sso` reads the provider's discovery document (cached), keeps the flow's secrets (state, nonce, PKCE
verifier, where to go after) in a short-lived httpOnly, SameSite=Lax cookie scoped to /login/sso, and sends the
browser to the provider. `GET /login/sso/callback` checks the returned state against that cookie, exchanges the
code at the token endpoint (client_secret_basic, or _post where the provider offers only that; a public client
sends only the PKCE verifier), validates the ID token against the provider's JWKS (signature, iss, aud, exp,
iat, nonce, azp, at_hash) and signs in the store's user for its (iss, sub), created on first sign-in, on the
configured tier.

Authlib and joserfc are imported here only: their exceptions become `_SsoFailed` (a status and a message
that says what happened and what to do), rendered as the error page. Codes, tokens and secrets are never
logged nor shown.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from infergate.http.state import get_state
from infergate.store.store import StoreNotFound
from infergate.web.config import SsoConfig, get_web
from infergate.web.pages import page
from infergate.web.session import current, safe_next, sign_in

__all__ = ["FLOW_COOKIE", "router"]

log = logging.getLogger("infergate.web.sso")

router = APIRouter(include_in_schema=False)

FLOW_COOKIE = "ig_sso"
_COOKIE_PATH = "/login/sso"  # sent to the start and the callback only
_FLOW_TTL_S = 600  # a sign-in at the provider must finish within this
_METADATA_TTL_S = 3600.0  # discovery and JWKS are read again after this (providers rotate keys)
_HTTP_TIMEOUT_S = 10.0
_LEEWAY_S = 60  # clock skew allowed on exp/iat
# The ID token is verified with the provider's published (public) keys: asymmetric algorithms only.
_ASYMMETRIC_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
_START_AGAIN = "Start again from the sign-in page."


class _SsoFailed(Exception):
    """A sign-in that cannot go on: the page's status, title and message (what happened, what to do)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


@dataclass(frozen=True, slots=True)
class _Flow:
    """What the callback must match, kept in the browser's flow cookie between the start and the callback."""

    state: str
    nonce: str
    verifier: str
    target: str

    def encode(self) -> str:
        raw = json.dumps({"s": self.state, "n": self.nonce, "v": self.verifier, "t": self.target}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def decode(value: str | None) -> _Flow | None:
        if not value:
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            flow = _Flow(str(data["s"]), str(data["n"]), str(data["v"]), str(data["t"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        return flow if flow.state and flow.nonce and flow.verifier else None


@dataclass
class _Provider:
    """The identity provider's discovery document and JWKS, read when first needed and kept for an hour."""

    sso: SsoConfig
    metadata: dict[str, Any] | None = None
    jwks: dict[str, Any] | None = None
    read_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def discovery(self, http: httpx.AsyncClient) -> dict[str, Any]:
        async with self.lock:
            if self.metadata is None or time.monotonic() - self.read_at > _METADATA_TTL_S:
                self.metadata = _checked_metadata(self.sso, await _get_json(http, _discovery_url(self.sso.issuer)))
                self.jwks, self.read_at = None, time.monotonic()
            return self.metadata

    async def key_set(self, http: httpx.AsyncClient, refresh: bool = False) -> KeySet:
        metadata = await self.discovery(http)
        async with self.lock:
            if self.jwks is None or refresh:
                self.jwks = await _get_json(http, str(metadata["jwks_uri"]))
            jwks = self.jwks
        try:
            return KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise _unreachable(self.sso, "its JWKS (the keys that sign ID tokens) is not a valid key set") from exc


def _discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _unreachable(sso: SsoConfig, what: str) -> _SsoFailed:
    return _SsoFailed(
        502, "Identity provider unavailable",
        f"The identity provider at {sso.issuer} could not be used: {what}. Try again in a moment; if it "
        "persists, an admin should check that the provider is up and the [sso] issuer in the config.",
    )  # fmt: skip


async def _get_json(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        body = response.json()
    except httpx.HTTPStatusError as exc:
        raise _SsoFailed(
            502, "Identity provider unavailable",
            f"The identity provider answered {exc.response.status_code} for {url}. Try again in a moment; if it "
            "persists, an admin should check the [sso] issuer in the config.",
        ) from None  # fmt: skip
    except httpx.HTTPError as exc:
        raise _SsoFailed(
            502, "Identity provider unreachable",
            f"The identity provider could not be reached at {url} ({type(exc).__name__}). Try again in a moment; "
            "if it persists, an admin should check that the provider is up and the [sso] issuer in the config.",
        ) from None  # fmt: skip
    except ValueError:
        raise _SsoFailed(
            502, "Identity provider unavailable", f"{url} did not answer with JSON; is the [sso] issuer right?"
        ) from None
    if not isinstance(body, dict):
        raise _SsoFailed(502, "Identity provider unavailable", f"{url} did not answer with a JSON object.")
    return body


def _checked_metadata(sso: SsoConfig, metadata: dict[str, Any]) -> dict[str, Any]:
    """The discovery document, once it names this issuer (OpenID Connect Discovery §4.3) and the endpoints."""
    if str(metadata.get("issuer", "")).rstrip("/") != sso.issuer.rstrip("/"):
        raise _unreachable(
            sso, f"its discovery document names the issuer {metadata.get('issuer')!r}, not the configured one"
        )
    missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not metadata.get(k)]
    if missing:
        raise _unreachable(sso, f"its discovery document lacks {', '.join(missing)}")
    return metadata


def _provider(request: Request, sso: SsoConfig) -> _Provider:
    """This app's cache of the provider (one per app, so tests with several apps in a process stay apart)."""
    provider: _Provider | None = getattr(request.app.state, "infergate_sso", None)
    if provider is None or provider.sso != sso:
        provider = _Provider(sso)
        request.app.state.infergate_sso = provider
    return provider


def _auth_method(sso: SsoConfig, metadata: Mapping[str, Any]) -> str:
    """How the client authenticates at the token endpoint: a public client (no secret) sends none (PKCE is its
    proof); a confidential one uses client_secret_basic, the spec's default, or _post where only that is offered."""
    if not sso.client_secret:
        return "none"
    offered = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" not in offered and "client_secret_post" in offered:
        return "client_secret_post"
    return "client_secret_basic"


def _oauth_client(sso: SsoConfig, metadata: Mapping[str, Any], redirect_uri: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=sso.client_id,
        client_secret=sso.client_secret,
        scope=sso.scopes,
        redirect_uri=redirect_uri,
        token_endpoint_auth_method=_auth_method(sso, metadata),
        code_challenge_method="S256",
        timeout=_HTTP_TIMEOUT_S,
    )


def _user_name(claims: Mapping[str, Any], name_claim: str) -> str:
    """The name a new user gets: the configured claim, else `preferred_username`, else `sub`."""
    for key in (name_claim, "preferred_username", "sub"):
        value = claims.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise _SsoFailed(401, "Sign-in failed", "The identity provider's ID token has no subject (`sub`). " + _START_AGAIN)


def _error_page(request: Request, failed: _SsoFailed) -> Response:
    response = page(request, "error.html", None, failed.status, title=failed.title, message=failed.message)
    response.delete_cookie(FLOW_COOKIE, path=_COOKIE_PATH)
    return response


# -- start --------------------------------------------------------------------------------------------------
@router.get("/login/sso")
async def start(request: Request, next: str | None = None) -> Response:
    sso = get_web(request).sso
    assert sso is not None  # the router is mounted only with [sso]
    if await current(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    flow = _Flow(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48), safe_next(next))
    redirect_uri = str(request.url_for("sso_callback"))
    try:
        async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT_S) as http:
            metadata = await _provider(request, sso).discovery(http)
    except _SsoFailed as failed:
        log.warning("sso: cannot start a sign-in: %s", failed.message)
        return _error_page(request, failed)
    async with _oauth_client(sso, metadata, redirect_uri) as client:
        url, _ = client.create_authorization_url(
            str(metadata["authorization_endpoint"]), state=flow.state, nonce=flow.nonce, code_verifier=flow.verifier
        )
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        flow.encode(),
        max_age=_FLOW_TTL_S,
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back to the callback
        secure=request.url.scheme == "https",
        path=_COOKIE_PATH,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# -- callback -----------------------------------------------------------------------------------------------
@router.get("/login/sso/callback", name="sso_callback")
async def callback(request: Request) -> Response:
    sso = get_web(request).sso
    assert sso is not None
    try:
        return await _finish(request, sso)
    except _SsoFailed as failed:
        log.warning("sso: sign-in refused (%d): %s", failed.status, failed.message)
        return _error_page(request, failed)


def _checked_callback(query: Mapping[str, str], flow: _Flow | None) -> str:
    """The authorization code, once the provider's answer is a success for this browser's flow."""
    error = query.get("error")
    if error:
        description = query.get("error_description") or ""
        if error in ("access_denied", "login_required", "consent_required", "interaction_required"):
            raise _SsoFailed(
                401, "Sign-in cancelled",
                f"The identity provider did not sign you in ({error}{': ' + description if description else ''}). "
                "You may have cancelled, or your account may not be allowed to use this server: start again, "
                "or ask your identity provider's admin for access.",
            )  # fmt: skip
        raise _SsoFailed(
            502, "Sign-in failed at the identity provider",
            f"The identity provider refused the sign-in request ({error}{': ' + description if description else ''}). "
            "An admin should check the [sso] client_id, scopes and the redirect URI registered at the provider.",
        )  # fmt: skip
    if flow is None:
        raise _SsoFailed(
            400, "Sign-in expired",
            "This sign-in was not started in this browser, or took longer than "
            f"{_FLOW_TTL_S // 60} minutes. " + _START_AGAIN,
        )  # fmt: skip
    if not hmac.compare_digest(query.get("state", ""), flow.state):
        raise _SsoFailed(
            400, "Sign-in refused",
            "The answer from the identity provider does not belong to the sign-in this browser started (its state "
            "does not match): it may come from another tab or from someone else's link. " + _START_AGAIN,
        )  # fmt: skip
    code = query.get("code")
    if not code:
        raise _SsoFailed(400, "Sign-in refused", "The identity provider sent no authorization code. " + _START_AGAIN)
    return code


async def _finish(request: Request, sso: SsoConfig) -> Response:
    flow = _Flow.decode(request.cookies.get(FLOW_COOKIE))
    code = _checked_callback(request.query_params, flow)
    assert flow is not None
    provider = _provider(request, sso)
    async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT_S) as http:
        metadata = await provider.discovery(http)
        # RFC 9207: where the provider names itself in the answer, it must be the one this flow went to.
        returned_iss = request.query_params.get("iss")
        if returned_iss is not None and returned_iss.rstrip("/") != str(metadata["issuer"]).rstrip("/"):
            raise _SsoFailed(400, "Sign-in refused", "The answer came from another identity provider. " + _START_AGAIN)
        token = await _exchange(sso, metadata, str(request.url_for("sso_callback")), code, flow.verifier)
        claims = await _validated_id_token(provider, http, metadata, token, flow.nonce)
    issuer, subject = str(claims["iss"]), str(claims["sub"])
    name = _user_name(claims, sso.name_claim)
    state = get_state(request)
    user = await asyncio.to_thread(state.store.sso_user, issuer, subject, name, sso.tier)
    try:
        response = await sign_in(request, user, flow.target)
    except StoreNotFound:
        raise _SsoFailed(
            403, "Account disabled",
            f"You signed in at the identity provider as {name}, but the account {user.name} is disabled on this "
            "server. Ask an admin of this server to enable it (`infergate users enable NAME`).",
        ) from None  # fmt: skip
    log.info("sso: %s signed in (iss %s) on tier %s", user.name, issuer, user.tier)
    response.delete_cookie(FLOW_COOKIE, path=_COOKIE_PATH)
    return response


async def _exchange(
    sso: SsoConfig, metadata: Mapping[str, Any], redirect_uri: str, code: str, verifier: str
) -> dict[str, Any]:
    """The token endpoint's answer for the code (which holds the ID token)."""
    try:
        async with _oauth_client(sso, metadata, redirect_uri) as client:
            token = await client.fetch_token(
                str(metadata["token_endpoint"]),
                grant_type="authorization_code",
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=verifier,
            )
    except OAuthError as exc:
        if exc.error == "invalid_grant":
            raise _SsoFailed(
                400, "Sign-in expired",
                "The identity provider no longer accepts this sign-in's code (codes are single-use and expire "
                "within minutes). " + _START_AGAIN,
            ) from None  # fmt: skip
        raise _SsoFailed(
            502, "Sign-in failed at the identity provider",
            f"The identity provider's token endpoint refused this server ({exc.error}). An admin should check the "
            "[sso] client_id and the client secret's environment variable.",
        ) from None  # fmt: skip
    except httpx.HTTPError as exc:
        raise _unreachable(sso, f"its token endpoint failed ({type(exc).__name__})") from None
    if not isinstance(token, dict) or not token.get("id_token"):
        raise _SsoFailed(
            502, "Sign-in failed at the identity provider",
            "The identity provider answered without an ID token; an admin should check that the [sso] scopes "
            "include `openid` and that the client is an OpenID Connect client.",
        )  # fmt: skip
    return dict(token)


async def _validated_id_token(
    provider: _Provider, http: httpx.AsyncClient, metadata: Mapping[str, Any], token: Mapping[str, Any], nonce: str
) -> CodeIDToken:
    """The ID token's claims, once its signature (the provider's JWKS) and claims check out."""
    sso = provider.sso
    offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [a for a in offered if a in _ASYMMETRIC_ALGS] or ["RS256"]
    id_token = str(token["id_token"])
    try:
        try:
            decoded = jwt.decode(id_token, await provider.key_set(http), algorithms=algorithms)
        except InvalidKeyIdError:  # a key the provider rotated in since the JWKS was read
            decoded = jwt.decode(id_token, await provider.key_set(http, refresh=True), algorithms=algorithms)
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            {"iss": {"essential": True, "value": str(metadata["issuer"])},
             "aud": {"essential": True, "value": sso.client_id}},
            {"nonce": nonce, "client_id": sso.client_id, "access_token": token.get("access_token")},
        )  # fmt: skip
        claims.validate(leeway=_LEEWAY_S)
    except JoseError as exc:
        raise _SsoFailed(
            401, "Sign-in refused",
            f"The identity provider's ID token did not pass validation ({exc.error}"
            f"{': ' + exc.description if exc.description else ''}). " + _START_AGAIN + " If it persists, an admin "
            "should check the [sso] issuer and client_id, and this server's clock.",
        ) from None  # fmt: skip
    return claims
