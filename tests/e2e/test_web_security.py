"""The web pages' sign-in and CSRF rules, over plain HTTP (the browser tests in tests/ui/ cover the pages in
use): a form without the page's token is refused, a session authenticates API calls only with its CSRF token,
signing out ends the session, a sign-in never sends the browser to another host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.support.server import MODEL_ID, Server, new_user_token

CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def _csrf(html: str, name: str = "csrf") -> str:
    found = re.search(rf'name="{name}" (?:value|content)="([^"]+)"', html)
    assert found, f"no {name} in the page"
    return found.group(1)


@pytest.fixture(scope="module")
def pro_token(server: Server) -> str:
    return new_user_token(server, "web-pat", "pro")


@contextmanager
def signed_in(server: Server, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as browser:
        form = browser.get("/login").text
        r = browser.post("/login", data={"csrf": _csrf(form), "token": token, "next": "/account"})
        assert r.status_code == 303 and r.headers["location"] == "/account"
        cookie = r.headers["set-cookie"]
        assert "ig_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        yield browser


def test_the_sign_in_form_needs_its_own_csrf_cookie(server: Server, pro_token: str) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as browser:
        r = browser.post("/login", data={"csrf": "made-up", "token": pro_token})
        assert r.status_code == 403 and "expired" in r.text
        assert "ig_session" not in r.headers.get("set-cookie", "")


def test_a_session_authenticates_api_calls_only_with_its_csrf_token(server: Server, pro_token: str) -> None:
    with signed_in(server, pro_token) as browser:
        csrf = _csrf(browser.get("/account").text, "csrf-token")
        own = browser.post("/v1/chat/completions", json=CHAT, headers={"X-CSRF-Token": csrf})
        assert own.status_code == 200
        assert "q=2500;" in own.headers["RateLimit-Policy"]  # the pro tier
        # What another site could make a browser send: the cookie without the page's token is no one.
        bare = browser.post("/v1/chat/completions", json=CHAT)
        assert bare.status_code == 200 and "q=2500;" not in bare.headers["RateLimit-Policy"]
        wrong = browser.post("/v1/chat/completions", json=CHAT, headers={"X-CSRF-Token": "x" + csrf})
        assert wrong.status_code == 401 and "/login" in wrong.json()["error"]["message"]


def test_forms_without_the_page_token_are_refused(server: Server, pro_token: str) -> None:
    with signed_in(server, pro_token) as browser:
        before = browser.get("/account").text.count("data-token-id=")
        r = browser.post("/account/tokens")
        assert r.status_code == 403 and "security token" in r.text
        r = browser.post("/account/tokens", data={"csrf": "forged"})
        assert r.status_code == 403
        assert browser.get("/account").text.count("data-token-id=") == before  # nothing was made
        csrf = _csrf(browser.get("/account").text)
        made = browser.post("/account/tokens", data={"csrf": csrf})
        assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
        assert re.search(r'id="new-token" class="secret">ig_', made.text)


def test_signing_out_ends_the_session(server: Server, pro_token: str) -> None:
    with signed_in(server, pro_token) as browser:
        session = browser.cookies["ig_session"]
        csrf = _csrf(browser.get("/account").text)
        assert browser.post("/logout", data={"csrf": csrf}).status_code == 303
    with httpx.Client(base_url=server.base_url, timeout=30, cookies={"ig_session": session}) as replay:
        r = replay.get("/account")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/account"
        refused = replay.post("/v1/chat/completions", json=CHAT, headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_a_sign_in_never_sends_the_browser_to_another_host(server: Server, pro_token: str, target: str) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as browser:
        form = browser.get("/login", params={"next": target}).text
        r = browser.post("/login", data={"csrf": _csrf(form), "token": pro_token, "next": target})
        assert r.status_code == 303 and r.headers["location"] == "/account"


def test_pages_are_not_api_routes(server: Server) -> None:
    paths = httpx.get(f"{server.base_url}/openapi.json", timeout=30).json()["paths"]
    assert not [p for p in paths if p.startswith(("/login", "/account", "/playground", "/static"))]
    assert "/admin" not in paths and "/admin/users" in paths
    # A page that needs a user sends a browser to sign in; static files are served to all.
    r = httpx.get(f"{server.base_url}/playground", timeout=30)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/playground"
    assert httpx.get(f"{server.base_url}/static/vendor/htmx-2.0.11.min.js", timeout=30).status_code == 200
    # A browser at the root goes to the pages; clients get the JSON they always got.
    page = httpx.get(server.base_url, headers={"accept": "text/html,application/xhtml+xml"}, timeout=30)
    assert page.status_code == 303 and page.headers["location"] == "/playground"
    assert httpx.get(server.base_url, timeout=30).json()["name"] == "infergate"
