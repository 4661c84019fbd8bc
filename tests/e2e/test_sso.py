"""Enterprise sign-in with OpenID Connect, against a real provider: panva's certified `oidc-provider` on Node
(tests/support/oidc.py), with its development login and consent pages driven over HTTP as a browser would.
infergate runs as a subprocess with an `[sso]` table and the client secret in the environment; the flow goes
GET /login/sso -> the provider's pages -> /login/sso/callback -> /account, and the session it starts calls the
API on the configured tier."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from tests.support.oidc import Provider, complete_login, start_provider
from tests.support.server import CHAT_MODEL_LAZY_OPEN_ANONYMOUS, MODEL_ID, Server, free_port, run_cli, start_server

SECRET = "sso-test-client-secret"
SECRET_ENV = "INFERGATE_TEST_SSO_SECRET"
ENTERPRISE_REQUESTS = 6000  # the default enterprise tier's requests per window


def _sso_config(issuer: str, client_id: str = "infergate", secret_env: str = SECRET_ENV) -> str:
    sso = f"""
[sso]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret_env = "{secret_env}"
tier = "enterprise"
label = "Sign in with Acme SSO"
"""
    return CHAT_MODEL_LAZY_OPEN_ANONYMOUS + sso


def _callback(port: int) -> str:
    return f"http://127.0.0.1:{port}/login/sso/callback"


@pytest.fixture(scope="module")
def provider_and_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Provider, Server]]:
    port = free_port()
    home = tmp_path_factory.mktemp("infergate-sso")
    provider = start_provider(_callback(port), client_secret=SECRET, log_dir=home)
    try:
        srv = start_server(home, config=_sso_config(provider.issuer), env={SECRET_ENV: SECRET}, port=port)
        try:
            srv.wait_listening()
            yield provider, srv
        finally:
            srv.stop()
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def provider(provider_and_server: tuple[Provider, Server]) -> Provider:
    return provider_and_server[0]


@pytest.fixture(scope="module")
def srv(provider_and_server: tuple[Provider, Server]) -> Server:
    return provider_and_server[1]


def _browser(srv: Server) -> httpx.Client:
    """A client that keeps cookies for both hosts, as a browser does (redirects are followed by hand)."""
    return httpx.Client(base_url=srv.base_url, timeout=60, follow_redirects=False)


def _sign_in(srv: Server, browser: httpx.Client, login: str, next_path: str = "/account") -> httpx.Response:
    """The whole flow up to infergate's answer to the callback (not followed)."""
    start = browser.get("/login/sso", params={"next": next_path})
    assert start.status_code == 303, start.text
    authorize = start.headers["location"]
    back = complete_login(browser, authorize, login)
    assert back.headers["location"].startswith(_callback(srv.port)), back.headers["location"]
    return browser.get(back.headers["location"])


def _users(srv: Server) -> list[list[str]]:
    lines = run_cli(srv, "users", "list").stdout.strip().splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:] if line.strip() and not set(line) <= {"-", " "}]


def test_login_page_shows_the_sso_link(srv: Server) -> None:
    page = httpx.get(f"{srv.base_url}/login", params={"next": "/playground"})
    assert page.status_code == 200
    link = re.search(r'<a[^>]*id="sso"[^>]*>', page.text)
    assert link, page.text
    assert 'href="/login/sso?next=' in link.group(0) and "playground" in link.group(0)
    assert "Sign in with Acme SSO" in page.text


def test_start_redirects_to_the_provider_with_state_nonce_and_pkce(srv: Server, provider: Provider) -> None:
    with _browser(srv) as browser:
        start = browser.get("/login/sso")
    assert start.status_code == 303
    url = urlsplit(start.headers["location"])
    assert f"{url.scheme}://{url.netloc}" == provider.issuer
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["client_id"] == "infergate" and query["response_type"] == "code"
    assert query["redirect_uri"] == _callback(srv.port)
    assert set(query["scope"].split()) == {"openid", "email", "profile"}
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 20 and len(query["nonce"]) >= 20
    cookie = start.headers["set-cookie"]
    assert cookie.startswith("ig_sso=") and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "path=/login/sso" in cookie.lower()


def test_full_flow_signs_in_on_the_enterprise_tier(srv: Server, provider: Provider) -> None:
    with _browser(srv) as browser:
        done = _sign_in(srv, browser, "carol@example.com")
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/account"
        cookies = done.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("ig_session="))
        assert "httponly" in session.lower() and "samesite=lax" in session.lower()
        assert any(c.startswith("ig_sso=") and "max-age=0" in c.lower() for c in cookies)  # the flow is over

        account = browser.get("/account")
        assert account.status_code == 200, account.text
        assert "carol@example.com" in account.text
        assert 'data-tier="enterprise"' in account.text
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', account.text)
        assert csrf and csrf.group(1)

        chat = browser.post(
            "/v1/chat/completions",
            headers={"X-CSRF-Token": csrf.group(1)},
            json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=300,
        )
        assert chat.status_code == 200, chat.text
        assert f"q={ENTERPRISE_REQUESTS};" in chat.headers["RateLimit-Policy"], chat.headers["RateLimit-Policy"]

    users = {row[0]: row for row in _users(srv)}
    assert "carol@example.com" in users, users
    assert users["carol@example.com"][1] == "enterprise" and users["carol@example.com"][-1] == "sso"


def test_signing_in_again_is_the_same_user(srv: Server) -> None:
    for _ in range(2):
        with _browser(srv) as browser:  # a fresh browser: a new provider session, the same account
            done = _sign_in(srv, browser, "erin@example.com")
            assert done.status_code == 303, done.text
            assert "erin@example.com" in browser.get("/account").text
    names = [row[0] for row in _users(srv)]
    assert names.count("erin@example.com") == 1 and not any(n.startswith("erin@example.com-") for n in names)


def test_second_sign_in_in_the_same_browser_skips_the_provider_pages(srv: Server) -> None:
    with _browser(srv) as browser:
        assert _sign_in(srv, browser, "frank@example.com").status_code == 303
        browser.post("/logout", data={"csrf": _csrf(browser)})
        again = _sign_in(srv, browser, "ignored-the-provider-remembers-frank")
        assert again.status_code == 303, again.text
        assert "frank@example.com" in browser.get("/account").text


def _csrf(browser: httpx.Client) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', browser.get("/account").text)
    assert match
    return match.group(1)


def test_tampered_state_is_refused(srv: Server, provider: Provider) -> None:
    with _browser(srv) as browser:
        start = browser.get("/login/sso")
        back = complete_login(browser, start.headers["location"], "mallory@example.com")
        url = urlsplit(back.headers["location"])
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        tampered = browser.get("/login/sso/callback", params={**query, "state": query["state"][::-1] + "x"})
    assert tampered.status_code == 400
    assert "state" in tampered.text and "Start again" in tampered.text
    assert "ig_session=" not in tampered.headers.get("set-cookie", "")
    assert query["code"] not in srv.log()  # codes are never logged


def test_callback_without_the_flow_cookie_is_refused(srv: Server) -> None:
    response = httpx.get(f"{srv.base_url}/login/sso/callback", params={"code": "abc", "state": "def"})
    assert response.status_code == 400
    assert "not started in this browser" in response.text


def test_cancel_at_the_provider_shows_access_denied(srv: Server, provider: Provider) -> None:
    with _browser(srv) as browser:
        start = browser.get("/login/sso")
        login_page = browser.get(start.headers["location"], follow_redirects=True)
        cancel = re.search(r'<a href="([^"]+/abort)">\[ Cancel \]</a>', login_page.text)
        assert cancel, login_page.text
        back = browser.get(urljoin(str(login_page.url), unescape(cancel.group(1))), follow_redirects=False)
        while back.is_redirect and back.headers["location"].startswith(provider.issuer):
            back = browser.get(back.headers["location"], follow_redirects=False)
        assert "error=access_denied" in back.headers["location"]
        denied = browser.get(back.headers["location"])
    assert denied.status_code == 401
    assert "access_denied" in denied.text and "start again" in denied.text


def test_error_from_the_provider_is_shown(srv: Server) -> None:
    with _browser(srv) as browser:
        start = browser.get("/login/sso")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        denied = browser.get(
            "/login/sso/callback",
            params={"error": "access_denied", "error_description": "not in the allowed group", "state": state},
        )
    assert denied.status_code == 401
    assert "not in the allowed group" in denied.text


def test_disabled_user_cannot_sign_in(srv: Server) -> None:
    with _browser(srv) as browser:
        assert _sign_in(srv, browser, "dave@example.com").status_code == 303
    run_cli(srv, "users", "disable", "dave@example.com")
    with _browser(srv) as browser:
        refused = _sign_in(srv, browser, "dave@example.com")
        assert refused.status_code == 403, refused.text
        assert "disabled" in refused.text and "dave@example.com" in refused.text
        assert not any(c.startswith("ig_session=") for c in refused.headers.get_list("set-cookie"))
        assert browser.get("/account").status_code == 303  # still not signed in


def test_no_secret_in_the_log(srv: Server) -> None:
    assert SECRET not in srv.log()


def test_public_client_signs_in_with_pkce_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No client secret in the environment: infergate signs in as a public client (token_endpoint_auth_method
    none at the provider, which then requires PKCE)."""
    port = free_port()
    home = tmp_path_factory.mktemp("infergate-sso-public")
    provider = start_provider(_callback(port), client_id="infergate-public", client_secret="", log_dir=home)
    try:
        srv = start_server(home, config=_sso_config(provider.issuer, "infergate-public", "UNSET_SSO_SECRET"), port=port)
        try:
            srv.wait_listening()
            with _browser(srv) as browser:
                done = _sign_in(srv, browser, "grace@example.com")
                assert done.status_code == 303, done.text
                assert 'data-tier="enterprise"' in browser.get("/account").text
        finally:
            srv.stop()
    finally:
        provider.stop()


def test_unreachable_provider_is_a_502(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("infergate-sso-down")
    srv = start_server(home, config=_sso_config(f"http://127.0.0.1:{free_port()}"), env={SECRET_ENV: SECRET})
    try:
        srv.wait_listening()
        response = httpx.get(f"{srv.base_url}/login/sso")
        assert response.status_code == 502
        assert "could not be reached" in response.text and "Try again" in response.text
    finally:
        srv.stop()


def _flow_cookie(browser: httpx.Client) -> dict[str, str]:
    value = next(c.value for c in browser.cookies.jar if c.name == "ig_sso")
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


def _replace_flow_cookie(browser: httpx.Client, flow: dict[str, str]) -> None:
    raw = base64.urlsafe_b64encode(json.dumps(flow).encode()).decode().rstrip("=")
    browser.cookies.delete("ig_sso")
    browser.cookies.set("ig_sso", raw, domain="127.0.0.1", path="/login/sso")


def test_id_token_with_another_nonce_is_refused(srv: Server) -> None:
    """The ID token is checked, not only the state: a flow cookie whose nonce is not the one sent (its state
    and PKCE verifier kept) gets a real, signed ID token that fails validation."""
    with _browser(srv) as browser:
        start = browser.get("/login/sso")
        flow = _flow_cookie(browser)
        back = complete_login(browser, start.headers["location"], "nina@example.com")
        _replace_flow_cookie(browser, {**flow, "n": "not-the-nonce-that-was-sent"})
        refused = browser.get(back.headers["location"])
    assert refused.status_code == 401, refused.text
    assert "ID token did not pass validation" in refused.text and "nonce" in refused.text
    assert "nina@example.com" not in [row[0] for row in _users(srv)]


def test_wrong_pkce_verifier_is_refused_by_the_provider(srv: Server) -> None:
    with _browser(srv) as browser:
        start = browser.get("/login/sso")
        flow = _flow_cookie(browser)
        back = complete_login(browser, start.headers["location"], "oscar@example.com")
        _replace_flow_cookie(browser, {**flow, "v": flow["v"][::-1]})
        refused = browser.get(back.headers["location"])
    assert refused.status_code == 400, refused.text
    assert "no longer accepts this sign-in" in refused.text
