"""A real OpenID Connect provider for the SSO tests: panva's certified `oidc-provider` (npm), pinned by
tests/support/oidc/package-lock.json and run by Node (tests/support/oidc/provider.mjs) on a free local port.

Its development login page accepts any login name (and any password): the login is the account, its `sub`
is stable for that login, `email` is the login (or LOGIN@example.com) and `preferred_username` the part
before the @; a consent page follows the first sign-in of a provider session. `complete_login` drives both
pages with httpx as a browser would. Needs `node` (20+) and `npm`; `start_provider` skips the test without
them and installs the pinned package (`npm ci`) when node_modules is missing or stale."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urljoin

import httpx

from tests.support.node import node_with_packages
from tests.support.server import free_port

__all__ = ["OIDC_DIR", "Provider", "complete_login", "start_provider"]

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
STARTUP_TIMEOUT_S = 30.0


@dataclass
class Provider:
    process: subprocess.Popen[bytes]
    port: int
    client_id: str
    client_secret: str
    redirect_uri: str
    log_path: Path

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _node() -> str:
    return node_with_packages(OIDC_DIR, "the SSO tests run a real OpenID provider on Node")


def start_provider(
    redirect_uri: str,
    client_id: str = "infergate",
    client_secret: str = "test-client-secret",
    log_dir: Path | None = None,
) -> Provider:
    """Start the provider with one registered client (an empty secret makes it a public client, PKCE only),
    and return once its discovery document is served. The caller stops it (`provider.stop()`)."""
    node = _node()
    port = free_port()
    log_path = (log_dir or Path(tempfile.gettempdir())) / f"infergate-oidc-provider-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [node, "provider.mjs", str(port), client_id, client_secret, redirect_uri],
            cwd=OIDC_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NODE_ENV": "test"},
        )
    provider = Provider(process, port, client_id, client_secret, redirect_uri, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the OpenID provider exited with {process.returncode}:\n{provider.log()[-4000:]}")
        try:
            if httpx.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=2).status_code == 200:
                return provider
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    provider.stop()
    raise RuntimeError(f"the OpenID provider did not serve discovery in {STARTUP_TIMEOUT_S} s:\n{provider.log()}")


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.IGNORECASE)


def _form_action(page: httpx.Response) -> str:
    match = _FORM.search(page.text)
    assert match, f"no form on the provider's page {page.url} ({page.status_code}):\n{page.text[:2000]}"
    return urljoin(str(page.url), unescape(match.group(1)))


def complete_login(client: httpx.Client, authorize_url: str, login: str, password: str = "any") -> httpx.Response:
    """Follow the provider from its authorization URL as a browser would: its login page (POST `prompt=login`,
    `login`, `password`) and, where shown, its consent page (POST `prompt=consent`), until it redirects to a
    URL that is not the provider's. Returns that last redirect (its `location` is the client's callback with
    `code` and `state`), not followed. ``client`` keeps the provider's cookies, so a second sign-in in the same
    client skips the pages the provider remembers."""
    issuer = httpx.URL(authorize_url)
    response = client.get(authorize_url, follow_redirects=False)
    for _ in range(12):
        if response.is_redirect:
            target = httpx.URL(urljoin(str(response.url), response.headers["location"]))
            if (target.host, target.port) != (issuer.host, issuer.port):
                return response
            response = client.get(target, follow_redirects=False)
        elif response.status_code == 200 and 'name="prompt" value="login"' in response.text:
            response = client.post(
                _form_action(response), data={"prompt": "login", "login": login, "password": password}
            )
        elif response.status_code == 200 and 'name="prompt" value="consent"' in response.text:
            response = client.post(_form_action(response), data={"prompt": "consent"})
        else:
            raise AssertionError(f"unexpected provider page {response.url} ({response.status_code}):\n{response.text}")
    raise AssertionError("the provider did not redirect back to the client after 12 steps")
