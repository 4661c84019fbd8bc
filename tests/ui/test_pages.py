"""The pages as a person uses them, in a real browser: sign in with a token, chat in the playground (streamed,
stopped), tokens made and revoked on the account page, usage charts of the requests just made, the admin pages
for admins only. Each test checks what the server did too (its metrics, the API, the database)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx
from playwright.sync_api import Page, expect

from tests.support.server import MODEL_ID, new_user_token, run_cli
from tests.ui.conftest import (
    EMBED_MODEL,
    FILL_MASK_ID,
    IMAGE_ID,
    PRO_MODEL,
    UI,
    Watch,
    active_sequences,
    screenshot,
    sign_in,
)


def test_sign_in_with_a_token_keeps_only_an_httponly_cookie(page: Page, ui: UI, watch: Watch) -> None:
    watch.expected_statuses.add(401)  # the wrong token first
    page.goto(f"{ui.url}/login")
    screenshot(page, "login")
    page.fill("input[name=token]", "ig_not-a-real-token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("Invalid credentials")
    sign_in(page, ui, ui.free_token)
    expect(page.locator("header .who")).to_contain_text("fred")
    expect(page.locator("#tier h2")).to_contain_text("free")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["ig_session"]["httpOnly"] is True
    assert cookies["ig_session"]["value"] != ui.free_token
    # Page scripts can reach neither the session nor the token.
    assert "ig_session" not in page.evaluate("document.cookie")
    storage = page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert ui.free_token not in storage and cookies["ig_session"]["value"] not in storage
    assert ui.free_token not in page.content()
    page.click("text=Sign out")
    page.wait_for_url(f"{ui.url}/login")
    page.goto(f"{ui.url}/account")
    page.wait_for_url(f"{ui.url}/login?next=/account")


def test_chat_streams_and_stop_stops_the_generation_on_the_server(page: Page, ui: UI) -> None:
    sign_in(page, ui, ui.free_token, then="/playground")
    page.fill("#system", "You are a patient assistant.")
    page.fill("#max_tokens", "1000")
    page.fill("#prompt", "Count from 1 to 1000, one number per line.")
    page.click("#send")
    answer = page.locator("#pane-a .msg.assistant").last
    expect(answer).not_to_have_text("", timeout=60_000)
    first = answer.inner_text()
    expect(answer).not_to_have_text(first, timeout=10_000)  # it grows while the model writes: a stream
    assert "streaming" in (answer.get_attribute("class") or "")
    assert active_sequences(ui, MODEL_ID) >= 1
    page.click("#stop")
    expect(answer).to_have_class("msg assistant stopped")
    kept = answer.inner_text()
    assert kept.startswith(first[:5]) and len(kept) > 0  # the partial answer stays on the page
    deadline = time.monotonic() + 10
    while active_sequences(ui, MODEL_ID) > 0:  # the server dropped the sequence: the client left
        assert time.monotonic() < deadline, "the stopped generation kept running on the server"
        time.sleep(0.1)
    time.sleep(0.5)
    assert answer.inner_text() == kept  # nothing arrives after Stop
    screenshot(page, "playground-chat")

    # The conversation goes on, with the stopped answer as history; a short answer runs to its end.
    page.fill("#max_tokens", "8")
    page.fill("#prompt", "And now say hello.")
    page.click("#send")
    expect(page.locator("#pane-a .stats")).to_contain_text(re.compile("stop|length"), timeout=60_000)
    expect(page.locator("#pane-a .msg")).to_have_count(4)


def test_a_free_user_cannot_pick_a_pro_model(page: Page, ui: UI, watch: Watch) -> None:
    watch.expected_statuses.add(403)
    sign_in(page, ui, ui.free_token, then="/playground")
    pro = page.locator(f'#model option[value="{PRO_MODEL}"]')
    expect(pro).to_be_disabled()
    expect(pro).to_contain_text("pro, enterprise only")
    expect(page.locator(f'#model option[value="{MODEL_ID}"]')).to_be_enabled()
    # Nor through the page's own API access: the session gets the same tier gate as a token.
    status = page.evaluate(
        """async (model) => (await fetch('/v1/chat/completions', {method: 'POST', headers: {
            'Content-Type': 'application/json',
            'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
            body: JSON.stringify({model, messages: [{role: 'user', content: 'hi'}], max_tokens: 2})})).status""",
        PRO_MODEL,
    )
    assert status == 403


def test_an_enterprise_user_may_pick_the_pro_model_and_compare_two(page: Page, ui: UI) -> None:
    sign_in(page, ui, ui.admin_token, then="/playground")
    expect(page.locator(f'#model option[value="{PRO_MODEL}"]')).to_be_enabled()
    page.select_option("#model-b", MODEL_ID)
    expect(page.locator("#pane-b")).to_be_visible()
    page.fill("#max_tokens", "6")
    page.fill("#prompt", "Name a colour.")
    page.click("#send")
    for pane in ("#pane-a", "#pane-b"):
        expect(page.locator(f"{pane} .stats")).to_contain_text(re.compile("stop|length"), timeout=60_000)
        expect(page.locator(f"{pane} .msg.assistant")).not_to_have_text("")
    screenshot(page, "playground-compare")


def test_the_snippet_is_the_request_the_page_makes(page: Page, ui: UI) -> None:
    """The openai snippet, copied from the page with a real token in it, runs and prints an answer."""
    sign_in(page, ui, ui.free_token, then="/playground")
    page.fill("#max_tokens", "5")
    page.fill("#prompt", "Say yes.")
    page.click("[data-snippet=openai]")
    code = page.locator("#snippet").inner_text()
    assert f'model="{MODEL_ID}"' in code and "max_tokens=5" in code and '"Say yes."' in code
    page.click("[data-snippet=curl]")
    curl = page.locator("#snippet").inner_text()
    assert '"max_tokens":5' in curl
    page.click("[data-snippet=hub]")
    hub_code = page.locator("#snippet").inner_text()
    assert "client.chat_completion(" in hub_code and "max_tokens=5" in hub_code
    for snippet in (code, hub_code):
        filled = snippet.replace("ig_...", ui.free_token)
        run = subprocess.run([sys.executable, "-c", filled], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip()
    streamed = subprocess.run(["bash", "-c", curl.replace("ig_...", ui.free_token)], capture_output=True, text=True)
    assert streamed.returncode == 0 and streamed.stdout.rstrip().endswith("data: [DONE]"), streamed.stdout


def test_text_to_image_in_the_playground(page: Page, ui: UI, watch: Watch) -> None:
    watch.expected_statuses.add(422)  # the image too wide for the tier
    sign_in(page, ui, ui.free_token, then="/playground")
    page.select_option("#model", IMAGE_ID)
    expect(page.locator("#image-form")).to_be_visible()
    page.fill("#image-prompt", "a misty beach at night")
    page.fill("#width", "64")
    page.fill("#height", "48")
    page.fill("#num_inference_steps", "2")
    page.click("#draw")
    image = page.locator("#image")
    expect(image).to_be_visible(timeout=120_000)
    page.wait_for_function("document.querySelector('#image').naturalWidth > 0")
    size = page.evaluate("(({naturalWidth: w, naturalHeight: h}) => [w, h])(document.querySelector('#image'))")
    assert size == [64, 48]
    page.click("[data-snippet=hub]")
    assert "client.text_to_image(" in page.locator("#snippet").inner_text()
    # Beyond the free tier's bound the API's own error is shown.
    page.fill("#width", "512")
    page.click("#draw")
    expect(page.locator("#error")).to_contain_text("must be <= 128 on the free tier", timeout=30_000)
    screenshot(page, "playground-image")


def test_sentence_similarity_in_the_playground(page: Page, ui: UI) -> None:
    sign_in(page, ui, ui.free_token, then="/playground")
    page.select_option("#model", EMBED_MODEL)
    page.click("#compare")
    scores = page.locator("#scores li")
    expect(scores).to_have_count(3, timeout=120_000)
    values = [float(scores.nth(i).get_attribute("data-score") or "nan") for i in range(3)]
    assert values[0] > values[1]  # a kitten on a rug is nearer a cat on a mat than the stock market
    screenshot(page, "playground-similarity")


def test_the_hubs_other_tasks_in_the_playground(page: Page, ui: UI) -> None:
    """Any other task: its example inputs and parameters, the answer as JSON, and the snippet that asks the same."""
    sign_in(page, ui, ui.free_token, then="/playground")
    page.select_option("#model", FILL_MASK_ID)
    expect(page.locator("#task-inputs")).to_have_value("Paris is the [MASK] of France.")
    page.fill("#task-parameters", '{"top_k": 2}')
    page.click("#run-task")
    expect(page.locator("#task-output")).to_contain_text('"sequence"', timeout=120_000)
    answer = json.loads(page.locator("#task-output").inner_text())
    assert len(answer) == 2 and all(a["sequence"].startswith("paris is the ") for a in answer)
    page.click("[data-snippet=hub]")
    code = page.locator("#snippet").inner_text()
    assert "client.fill_mask(" in code and "top_k=2," in code
    run = subprocess.run(
        [sys.executable, "-c", code.replace("ig_...", ui.free_token)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and "sequence=" in run.stdout, run.stderr
    screenshot(page, "playground-task")


def test_a_token_made_on_the_account_page_works_until_revoked_there(page: Page, ui: UI) -> None:
    sign_in(page, ui, ui.free_token)
    page.click("#create-token")
    token = page.locator("#new-token").inner_text().strip()
    assert token.startswith("ig_")
    ui.made.append(token)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    answer = httpx.post(f"{ui.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert answer.status_code == 200
    assert 'q=500;' in answer.headers["RateLimit-Policy"]  # fred's free tier, not anonymous
    page.reload()
    expect(page.locator("#new-token")).to_have_count(0)  # shown once
    row = page.locator(f'#token-table tr[data-prefix="{token[:7]}"]')
    expect(row).to_contain_text("active")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="Revoke").click()
    expect(page.locator(f'#token-table tr[data-prefix="{token[:7]}"]')).to_contain_text("revoked")
    refused = httpx.post(f"{ui.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert refused.status_code == 401


def test_usage_charts_show_the_requests_just_made(page: Page, ui: UI) -> None:
    token = new_user_token(ui.server, "una", "free")
    ui.made.append(token)
    for n in range(3):
        body = {"inputs": f"Hello number {n}", "parameters": {"max_new_tokens": 2}}
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{ui.url}/models/{MODEL_ID}", json=body, headers=headers, timeout=60).status_code == 200
    sign_in(page, ui, token)
    model_bar = page.locator("#chart-models svg rect")
    expect(model_bar).to_have_count(1)
    expect(model_bar.locator("title")).to_have_text(f"{MODEL_ID}: 3 requests")
    expect(page.locator("#chart-days svg")).to_have_attribute("data-bars", "14")
    today = page.locator("#chart-days svg rect").last
    expect(today.locator("title")).to_contain_text(": 3 requests")
    screenshot(page, "account")
    csv = page.evaluate("async () => (await fetch('/account/usage.csv')).text()")
    lines = csv.strip().splitlines()
    assert lines[0] == "day,model,requests,prompt_tokens,generated_tokens,cache_hits,errors"
    assert lines[1].split(",")[1:3] == [MODEL_ID, "3"]


def test_admin_pages_refuse_a_non_admin(page: Page, ui: UI, watch: Watch) -> None:
    watch.expected_statuses.add(403)
    sign_in(page, ui, ui.free_token)
    expect(page.locator("nav a", has_text="Admin")).to_have_count(0)
    response = page.goto(f"{ui.url}/admin")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Admins only")
    # A form post with fred's own CSRF token is refused all the same.
    status = page.evaluate(
        """async () => (await fetch('/admin/forms/users', {method: 'POST', headers: {
            'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
            body: new URLSearchParams({name: 'mallory', tier: 'enterprise'})})).status"""
    )
    assert status == 403
    assert httpx.get(f"{ui.url}/admin/users", headers={"Authorization": f"Bearer {ui.free_token}"}).status_code == 403


def test_admin_manages_users_and_sees_models_and_errors(page: Page, ui: UI) -> None:
    sign_in(page, ui, ui.admin_token, then="/admin")
    expect(page.locator(f'#model-table tr[data-model="{MODEL_ID}"] .state')).to_have_text("ready")
    page.fill("#users input[name=name]", "zoe")
    page.select_option("#users select[name=tier]", "free")
    page.click("#create-user")
    row = page.locator('#user-table tr[data-user="zoe"]')
    expect(row).to_contain_text("active")
    row.locator("select").select_option("pro")
    expect(page.locator('#user-table tr[data-user="zoe"] select')).to_have_value("pro")
    assert "zoe" in run_cli(ui.server, "users", "list").stdout
    zoe = run_cli(ui.server, "tokens", "create", "zoe").stdout.strip().splitlines()[-1]
    ui.made.append(zoe)
    headers = {"Authorization": f"Bearer {zoe}"}
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 2}}
    assert httpx.post(f"{ui.url}/models/{MODEL_ID}", json=body, headers=headers, timeout=60).status_code == 200
    page.locator('#user-table tr[data-user="zoe"] button', has_text="Disable").click()
    expect(page.locator('#user-table tr[data-user="zoe"] .state')).to_have_text("disabled")
    refused = httpx.post(f"{ui.url}/models/{MODEL_ID}", json=body, headers=headers, timeout=60)
    assert refused.status_code == 401 and "disabled" in refused.json()["error"]
    # The refusal is among the recent errors (the live section refreshes itself).
    expect(page.locator("#error-table")).to_contain_text("disabled", timeout=10_000)
    page.locator('#user-table tr[data-user="zoe"] button', has_text="Enable").click()
    expect(page.locator('#user-table tr[data-user="zoe"] .state')).to_have_text("active")
    assert httpx.post(f"{ui.url}/models/{MODEL_ID}", json=body, headers=headers, timeout=60).status_code == 200
    screenshot(page, "admin")
