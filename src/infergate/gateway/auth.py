"""API tokens -> Principal. Tokens are looked up by their SHA-256 (the store compares in constant time) and
the answer is cached briefly, so the database is off the hot path. No token ever reaches a log line.

A bearer value that is not an infergate token (they all start with ``ig_``) is one the caller's client sent on
its own: huggingface_hub sends the user's Hub token (``HF_TOKEN``, ``hf auth login``) to any endpoint, and the
``openai`` SDK refuses to run without a key, so users pass the placeholders OpenAI-compatible servers teach
(``EMPTY``, ``sk-no-key-required``). Such a caller is served as anonymous where anonymous calls are allowed,
with exactly anonymous rights; otherwise the 401 says what happened and how to send an infergate token.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable

from infergate.core.errors import UnauthorizedError
from infergate.gateway.principal import Principal
from infergate.store.records import PrincipalRecord
from infergate.store.store import hash_token

__all__ = ["INVALID_CREDENTIALS", "TOKEN_PREFIX", "Authenticator", "ServiceAuthenticator"]

# The hosted API's words, which clients and users recognise.
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
_MAX_CACHED = 100_000
TOKEN_PREFIX = "ig_"  # every token the store issues starts with it
_HOW_TO_SEND = (
    "Pass an infergate token (it starts with `ig_`; an admin creates one with `infergate tokens create USER`): "
    'InferenceClient(model=URL, token="ig_..."), OpenAI(base_url=URL, api_key="ig_..."), or the header '
    "`Authorization: Bearer ig_...`."
)


class Authenticator:
    def __init__(
        self,
        lookup: Callable[[str], PrincipalRecord | None],
        *,
        allow_anonymous: bool,
        cache_ttl_s: float,
    ) -> None:
        """``lookup`` is the store's (blocking) token_hash -> record; it runs in a worker thread."""
        self._lookup = lookup
        self._allow_anonymous = allow_anonymous
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, PrincipalRecord | None]] = {}

    async def authenticate(self, authorization: str | None, client: str) -> Principal:
        """``client`` (the peer address) identifies anonymous callers for their limits."""
        token = _bearer(authorization)
        if token is None or not token.startswith(TOKEN_PREFIX):
            if not self._allow_anonymous:
                raise UnauthorizedError(_refusal(foreign=token is not None))
            return Principal(key=f"anon:{client}", tier="anonymous", foreign_token=token is not None)
        digest = hash_token(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            record = cached[1]
        else:
            record = await asyncio.to_thread(self._lookup, digest)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, record)
        if record is None or record.revoked:
            raise UnauthorizedError(INVALID_CREDENTIALS)
        return Principal(
            key=f"user:{record.user_id}",
            tier=record.tier,
            user_id=record.user_id,
            user_name=record.user_name,
            token_id=record.token_id,
            admin=record.admin,
        )

    def forget(self) -> None:
        """Drop cached answers (after a revocation or a tier change made in this process)."""
        self._cache.clear()


class ServiceAuthenticator(Authenticator):
    """Engine mode: the one caller is the gateway in front, with its service token (compared in constant
    time); it gets the `engine` tier, whose limits are the gateway's business."""

    def __init__(self, service_token: str, env_name: str) -> None:
        super().__init__(lambda digest: None, allow_anonymous=False, cache_ttl_s=0.0)
        self._digest = hash_token(service_token)
        self._env_name = env_name

    async def authenticate(self, authorization: str | None, client: str) -> Principal:
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
