"""Who is calling, as the gateway sees it after authentication."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    key: str  # the identity limits are counted against: "user:ID", or "anon:ADDRESS"
    tier: str
    user_id: int | None = None
    user_name: str | None = None
    token_id: int | None = None
    admin: bool = False
    # An anonymous caller whose client sent a token this server did not issue (a Hub token, a placeholder key).
    foreign_token: bool = False

    @property
    def anonymous(self) -> bool:
        return self.user_id is None
