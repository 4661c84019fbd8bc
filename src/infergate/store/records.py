"""Plain records the store returns; callers never see ORM objects or sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

__all__ = [
    "DailyUsageRow",
    "PrincipalRecord",
    "SessionRecord",
    "TokenInfo",
    "UsageRow",
    "UsageSummaryRow",
    "UserInfo",
]


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    name: str
    tier: str
    admin: bool
    created_at: datetime
    disabled: bool = False
    sso: bool = False  # signs in through the identity provider


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    user_name: str
    prefix: str  # the first characters of the token, safe to show (e.g. "ig_3fK9")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class PrincipalRecord:
    """What authentication needs about a token: whose it is and whether it still works."""

    token_id: int
    user_id: int
    user_name: str
    tier: str
    admin: bool
    revoked: bool
    disabled: bool = False  # the user's, which stops every token and session of theirs


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A browser sign-in: whose it is, the CSRF token its forms carry, and when it ends."""

    principal: PrincipalRecord  # token_id is 0: a session is not a token
    csrf: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class UsageRow:
    user_id: int | None  # None: anonymous
    token_id: int | None
    model: str
    task: str
    prompt_tokens: int
    generated_tokens: int
    cached: bool
    status: int
    duration_ms: float
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UsageSummaryRow:
    user_name: str  # "(anonymous)" for requests without a token
    model: str
    requests: int
    prompt_tokens: int
    generated_tokens: int
    cache_hits: int
    errors: int  # status >= 400


@dataclass(frozen=True, slots=True)
class DailyUsageRow:
    day: date  # UTC
    model: str
    requests: int
    prompt_tokens: int
    generated_tokens: int
    cache_hits: int
    errors: int
