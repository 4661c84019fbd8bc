"""What the pages need besides the API's state: sign-in settings and the templates, as one typed object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

__all__ = ["STATIC_DIR", "SsoConfig", "WebConfig", "get_web"]

_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"


@dataclass(frozen=True, slots=True)
class SsoConfig:
    """An OpenID Connect identity provider that enterprise users sign in with."""

    issuer: str
    client_id: str
    client_secret: str | None
    tier: str  # what a user signed in through it gets
    scopes: str
    name_claim: str  # the ID token's claim that names the user (falls back to preferred_username, then sub)
    label: str  # the sign-in button's words


@dataclass(frozen=True, slots=True)
class WebConfig:
    session_ttl_s: float
    sso: SsoConfig | None
    templates: Jinja2Templates


def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(_HERE / "templates"))  # autoescapes .html


def get_web(request: Request) -> WebConfig:
    config: WebConfig = request.app.state.infergate_web
    return config
