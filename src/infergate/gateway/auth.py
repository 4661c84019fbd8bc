"""API tokens -> Principal. Tokens are looked up by their SHA-256 (the store compares in constant time) and
the answer is cached briefly, so the database is off the hot path. No token ever reaches a log line.

A bearer value that is not an infergate token (they all start with ``ig_``) is one the caller's client sent on
its own: huggingface_hub sends the user's Hub token (``HF_TOKEN``, ``hf auth login``) to any endpoint, and the
``openai`` SDK refuses to run without a key, so users pass the placeholders OpenAI-compatible servers teach
(``EMPTY``, ``sk-no-key-required``). Such a caller is served as anonymous where anonymous calls are allowed,
with exactly anonymous rights; otherwise the 401 says what happened and how to send an infergate token.

A browser signed in to the web pages holds a session cookie instead (`SessionKey`); the pages' own calls to the
API carry the session's CSRF token beside it, and a session without its CSRF token authenticates nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from infergate.core.errors import UnauthorizedError
from infergate.gateway.principal import Principal
from infergate.store.records import PrincipalRecord, SessionRecord
from infergate.store.store import hash_token

__all__ = [
    "INVALID_CREDENTIALS",
    "SESSION_ENDED",
    "TOKEN_PREFIX",
    "Authenticator",
    "ServiceAuthenticator",
    "SessionKey",
    "WebSession",
]

# The hosted API's words, which clients and users recognise.
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
SESSION_ENDED = "Your sign-in has ended (signed out, expired, or the user was disabled); sign in again at /login."
_MAX_CACHED = 100_000
TOKEN_PREFIX = "ig_"  # every token the store issues starts with it
_HOW_TO_SEND = (
    "Pass an infergate token (it starts with `ig_`; an admin creates one with `infergate tokens create USER`): "
    'InferenceClient(model=URL, token="ig_..."), OpenAI(base_url=URL, api_key="ig_..."), or the header '
    "`Authorization: Bearer ig_...`."
)


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A browser's credentials: its session cookie and, on calls that change something, the CSRF token."""

    session_id: str
    csrf: str | None


@dataclass(frozen=True, slots=True)
class WebSession:
    principal: Principal
    csrf: str


class Authenticator:
    def __init__(
        self,
        lookup: Callable[[str], PrincipalRecord | None],
        *,
        allow_anonymous: bool,
        cache_ttl_s: float,
        session_lookup: Callable[[str], SessionRecord | None] = lambda digest: None,
    ) -> None:
        """``lookup`` is the store's (blocking) token_hash -> record, ``session_lookup`` its session_hash -> record;
        they run in a worker thread."""
        self._lookup = lookup
        self._session_lookup = session_lookup
        self._allow_anonymous = allow_anonymous
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, PrincipalRecord | SessionRecord | None]] = {}

    async def authenticate(
        self, authorization: str | None, client: str, session: SessionKey | None = None
    ) -> Principal:
        """``client`` (the peer address) identifies anonymous callers for their limits. A bearer token wins over a
        session; a session counts only with its CSRF token (a page's own call), else the caller is anonymous."""
        token = _bearer(authorization)
        if token is None and session is not None and session.csrf is not None:
            web = await self.session(session.session_id)
            if web is None or not hmac.compare_digest(web.csrf, session.csrf):
                raise UnauthorizedError(SESSION_ENDED)
            return web.principal
        if token is None or not token.startswith(TOKEN_PREFIX):
            if not self._allow_anonymous:
                raise UnauthorizedError(_refusal(foreign=token is not None))
            return Principal(key=f"anon:{client}", tier="anonymous", foreign_token=token is not None)
        record = await self._cached("token:" + hash_token(token), self._lookup)
        if not isinstance(record, PrincipalRecord) or record.revoked:
            raise UnauthorizedError(INVALID_CREDENTIALS)
        if record.disabled:
            raise UnauthorizedError(
                f"The user {record.user_name!r} is disabled, so its tokens are refused; ask an admin to enable it."
            )
        return _principal(record)

    async def session(self, session_id: str) -> WebSession | None:
        """The signed-in user of a session cookie, or None when the session has ended."""
        record = await self._cached("session:" + hash_token(session_id), self._session_lookup)
        if not isinstance(record, SessionRecord):
            return None
        return WebSession(_principal(record.principal), record.csrf)

    async def _cached(
        self, key: str, lookup: Callable[[str], PrincipalRecord | SessionRecord | None]
    ) -> PrincipalRecord | SessionRecord | None:
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = await asyncio.to_thread(lookup, key.partition(":")[2])
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now + self._ttl, record)
        return record

    def forget(self) -> None:
        """Drop cached answers (after a revocation, a sign-out or a tier change made in this process)."""
        self._cache.clear()


def _principal(record: PrincipalRecord) -> Principal:
    return Principal(
        key=f"user:{record.user_id}",
        tier=record.tier,
        user_id=record.user_id,
        user_name=record.user_name,
        token_id=record.token_id or None,
        admin=record.admin,
    )


class ServiceAuthenticator(Authenticator):
    """Engine mode: the one caller is the gateway in front, with its service token (compared in constant
    time); it gets the `engine` tier, whose limits are the gateway's business."""

    def __init__(self, service_token: str, env_name: str) -> None:
        super().__init__(lambda digest: None, allow_anonymous=False, cache_ttl_s=0.0)
        self._digest = hash_token(service_token)
        self._env_name = env_name

    async def authenticate(
        self, authorization: str | None, client: str, session: SessionKey | None = None
    ) -> Principal:
        token = _bearer(authorization) if authorization else None
        if token is None or not hmac.compare_digest(hash_token(token), self._digest):
            raise UnauthorizedError(
                "This server runs in engine mode (`infergate serve --engine`) and serves only the gateway in front "
                f"of it, with the service token from ${self._env_name}. Send your requests to the gateway, or "
                "give the gateway's model entry that token (`api_key_env`)."
            )
        return Principal(key="service", tier="engine")


def _refusal(foreign: bool) -> str:
    if not foreign:
        return f"This server requires an API token and the request sent none. {_HOW_TO_SEND}"
    return (
        "The Authorization header carries a token this server did not issue (a Hugging Face token or a "
        "placeholder key such as EMPTY; clients send those on their own), and this server does not serve "
        f"anonymous calls. {_HOW_TO_SEND}"
    )


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise UnauthorizedError(INVALID_CREDENTIALS)
    return value.strip()
