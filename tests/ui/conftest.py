"""The web pages in a real browser: Debian's chromium-headless-shell driven by Playwright (never `playwright
install`: the browser comes from apt, which `make test` runs where it is missing), against one real server with
the default catalog plus a tiny text-to-image model, and users on the free and enterprise tiers.

Every test is watched: a console error, an uncaught page error or a request to any host but 127.0.0.1 fails it
(the request is aborted before it leaves). Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, sync_playwright

from tests.support.oidc import Provider, start_provider
from tests.support.server import Server, free_port, new_user_token, run_cli, start_server
from tests.support.tiny_models import build, build_text_to_image

IMAGE_ID = "tiny/stable-diffusion"
FILL_MASK_ID = "tiny/fill-mask"
PRO_MODEL = "google/gemma-3-270m"
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def _find_chromium() -> str | None:
    for candidate in (
        os.environ.get("INFERGATE_CHROMIUM"),
        "/usr/lib/chromium/chromium-headless-shell",
        "/usr/lib/chromium/chromium",
        shutil.which("chromium-headless-shell"),
        shutil.which("chromium"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for these tests. Package-scoped on purpose: the sync Playwright API runs an event
    loop in this thread while it is open, and the unit tests after this package call asyncio.run()."""
    executable = _find_chromium()
    if executable is None:
        message = "no Chromium: `make test` installs Debian's chromium-headless-shell (apt-get install it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must not pass by skipping the browser tests
        pytest.skip(message)
    # Without these, Chromium dials Google's hosts at start; this machine's network refuses them.
    args = ["--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=args, headless=True)
        yield chromium
        chromium.close()


@dataclass
class UI:
    server: Server
    admin_token: str  # "ada", enterprise, admin
    free_token: str  # "fred", free
    issuer: str = ""  # the identity provider's, for the SSO sign-in
    made: list[str] = field(default_factory=list)  # tokens the tests made: none may reach the server's log

    @property
    def url(self) -> str:
        return self.server.base_url


SSO_SECRET_ENV = "INFERGATE_UI_SSO_SECRET"
SSO_SECRET = "ui-test-client-secret"
UI_CONFIG = """
[sso]
issuer = "{issuer}"
client_id = "infergate"
client_secret_env = "{secret_env}"
tier = "enterprise"
label = "Sign in with Acme SSO"

[tiers.free]
max_image_size = 128
max_inference_steps = 4

[[models]]
id = "{image_id}"
task = "text-to-image"
source = "{pipeline}"
load_at_startup = false

[[models]]
id = "{fill_mask_id}"
task = "fill-mask"
source = "{fill_mask}"
load_at_startup = false
"""


@pytest.fixture(scope="package")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Provider, int]]:
    """A real OpenID Connect provider (oidc-provider on Node) with infergate registered as a client, and the port
    infergate will listen on (its callback URL is registered before it starts)."""
    port = free_port()
    callback = f"http://127.0.0.1:{port}/login/sso/callback"
    provider = start_provider(callback, client_secret=SSO_SECRET, log_dir=tmp_path_factory.mktemp("oidc"))
    yield provider, port
    provider.stop()


@pytest.fixture(scope="package")
def ui(tmp_path_factory: pytest.TempPathFactory, oidc: tuple[Provider, int]) -> Iterator[UI]:
    provider, port = oidc
    pipeline = build_text_to_image(tmp_path_factory.mktemp("ui-tiny-sd"))
    fill_mask = build("fill-mask", tmp_path_factory.mktemp("ui-tiny-fill-mask"))
    config = UI_CONFIG.format(
        image_id=IMAGE_ID, pipeline=pipeline, fill_mask_id=FILL_MASK_ID, fill_mask=fill_mask,
        issuer=provider.issuer, secret_env=SSO_SECRET_ENV,
    )  # fmt: skip
    home = tmp_path_factory.mktemp("ui-home")
    server = start_server(home, config=config, env={SSO_SECRET_ENV: SSO_SECRET}, port=port)
    try:
        server.wait_healthy()
        run_cli(server, "users", "create", "ada", "--tier", "enterprise", "--admin")
        admin = run_cli(server, "tokens", "create", "ada").stdout.strip().splitlines()[-1]
        ui = UI(server, admin, new_user_token(server, "fred", "free"), issuer=provider.issuer)
        yield ui
        # Nothing the pages did put a token, or a session id, in the server's log (its access log included).
        log = server.log()
        secrets = [ui.admin_token, ui.free_token, *ui.made]
        assert not [s for s in secrets if s in log or s[3:11] in log], "a token reached the server log"
        assert "ig_session=" not in log and SSO_SECRET not in log
    finally:
        server.stop()


@dataclass
class Watch:
    """What a page did that a user would not want: console errors, page errors, requests off this machine."""

    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    # Pages of the test's identity provider (not infergate's): what they ask for is blocked all the same, but it
    # is not the product's doing (oidc-provider's development pages import a web font).
    foreign_origins: tuple[str, ...] = ()
    foreign_blocked: set[str] = field(default_factory=set)  # what those pages asked for and did not get
    # Chromium logs every 4xx answer as a console error; a test that provokes one on purpose says which.
    expected_statuses: set[int] = field(default_factory=set)

    def console(self, kind: str, text: str, url: str = "") -> None:
        if url in self.foreign_blocked or url.startswith(self.foreign_origins or ("\0",)):
            return
        failed = re.match(r"Failed to load resource: the server responded with a status of (\d+)", text)
        if kind == "error" and not (failed and int(failed.group(1)) in self.expected_statuses):
            self.errors.append(f"console: {text}")


@pytest.fixture
def watch() -> Watch:
    return Watch()


_LOCAL = re.compile(r"^(https?|wss?)://127\.0\.0\.1(:\d+)?/")


@pytest.fixture
def context(browser: Browser, watch: Watch) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})

    def guard(route: Route, request: Request) -> None:
        if _LOCAL.match(request.url) or request.url.startswith(("data:", "blob:")):
            route.continue_()
            return
        route.abort()
        if watch.foreign_origins and request.frame.url.startswith(watch.foreign_origins):
            watch.foreign_blocked.add(request.url)
        else:
            watch.blocked.append(request.url)

    ctx.route("**/*", guard)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext, watch: Watch) -> Iterator[Page]:
    p = context.new_page()
    p.on("console", lambda m: watch.console(m.type, m.text, m.location.get("url", "")))
    p.on("pageerror", lambda e: watch.errors.append(f"page error: {e}"))
    yield p
    # Checked after each test, so that the failure names the test that caused it.
    assert watch.blocked == [], f"requests left 127.0.0.1: {watch.blocked}"
    assert watch.errors == [], f"the page logged errors: {watch.errors}"


def sign_in(page: Page, ui: UI, token: str, then: str = "/account") -> None:
    page.goto(f"{ui.url}{then}")
    page.wait_for_url(re.compile(r"/login\?next="))  # a page that needs a user sends the browser to sign in
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{ui.url}{then}")


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def active_sequences(ui: UI, model: str) -> float:
    """The engine's running sequences for ``model``, as /metrics reports them."""
    text = httpx.get(f"{ui.url}/metrics", timeout=10).text
    found = re.search(rf'^infergate_active_sequences{{model="{re.escape(model)}"}} (\S+)$', text, re.M)
    assert found, "infergate_active_sequences missing from /metrics"
    return float(found.group(1))
