"""Enterprise sign-in in a real browser, through a real OpenID Connect provider (oidc-provider on Node, its own
login and consent pages): the user lands on the account page on the configured tier, and the pages give them
what that tier has."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.server import run_cli
from tests.ui.conftest import PRO_MODEL, UI, Watch, screenshot


def test_sso_sign_in_lands_on_the_account_page_with_the_configured_tier(page: Page, ui: UI, watch: Watch) -> None:
    watch.foreign_origins = (ui.issuer,)  # the provider's own pages are the test's, not infergate's
    page.goto(f"{ui.url}/login?next=/account")
    screenshot(page, "login")
    sso = page.locator("#sso")
    expect(sso).to_have_text("Sign in with Acme SSO")
    sso.click()
    page.wait_for_url(re.compile(re.escape(ui.issuer) + "/interaction/"), wait_until="domcontentloaded")
    page.fill("input[name=login]", "carol@example.com")
    page.fill("input[name=password]", "any password")
    page.get_by_role("button", name="Sign-in").click()
    expect(page.locator("h1")).to_have_text("Authorize")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{ui.url}/account")
    expect(page.locator("header .who")).to_contain_text("carol@example.com")
    expect(page.locator("#tier h2")).to_contain_text("enterprise")
    expect(page.locator("#limits tr[data-limit=requests]")).to_contain_text("6000 per 300 s")
    cookies = {c["name"]: c for c in page.context.cookies(ui.url)}
    assert cookies["ig_session"]["httpOnly"] is True
    screenshot(page, "account-sso")
    listed = [line.split() for line in run_cli(ui.server, "users", "list").stdout.splitlines()]
    carol = next(row for row in listed if row[0] == "carol@example.com")
    assert carol[1] == "enterprise" and carol[-1] == "sso"
    # The enterprise tier's curated model is hers to pick in the playground.
    page.goto(f"{ui.url}/playground")
    expect(page.locator(f'#model option[value="{PRO_MODEL}"]')).to_be_enabled()
