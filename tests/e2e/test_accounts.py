"""Accounts, tokens, tiers, limits, the gated model, the result cache and usage, on a server of their own
with small limits, driven through the CLI and real clients."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from openai import OpenAI

from tests.support.server import MODEL_ID, Server, run_cli, start_server

GATED = "google/gemma-3-270m"
CONFIG = """
[auth]
token_cache_ttl_s = 1.0

[tiers.free]
requests = 5
window = 300
concurrent = 16

[tiers.pro]
tokens_per_minute = 50
concurrent = 16

[tiers.enterprise]
concurrent = 1
"""
BODY = {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 3}}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("accounts"), config=CONFIG)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def new_user(srv: Server, name: str, tier: str, *extra: str) -> str:
    """Create a user and a token through the CLI; the token is alone on the last line."""
    run_cli(srv, "users", "create", name, "--tier", tier, *extra)
    out = run_cli(srv, "tokens", "create", name).stdout
    token = out.strip().splitlines()[-1]
    assert token.startswith("ig_") and " " not in token
    return token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_cli_creates_lists_and_refuses_duplicates(srv: Server) -> None:
    new_user(srv, "carol", "free")
    listed = run_cli(srv, "users", "list").stdout
    assert "carol" in listed and "free" in listed
    again = run_cli(srv, "users", "create", "carol", check=False)
    assert again.returncode != 0 and "carol" in again.stderr
    bad = run_cli(srv, "users", "create", "dave", "--tier", "platinum", check=False)
    assert bad.returncode != 0 and "platinum" in bad.stderr
    tokens = run_cli(srv, "tokens", "list", "carol").stdout
    assert "ig_" in tokens and "active" in tokens


def test_unknown_and_revoked_tokens_get_401_in_the_hosted_api_words(srv: Server) -> None:
    token = new_user(srv, "erin", "free")
    ok = httpx.post(srv.model_url, json=BODY, headers=auth(token), timeout=60)
    assert ok.status_code == 200, ok.text
    bad = httpx.post(srv.model_url, json=BODY, headers=auth("ig_not-a-real-token"), timeout=60)
    assert bad.status_code == 401
    assert bad.json()["error"] == "Invalid credentials in Authorization header"
    run_cli(srv, "tokens", "revoke", token)
    deadline = time.monotonic() + 10  # the server caches a token's answer for token_cache_ttl_s
    while httpx.post(srv.model_url, json=BODY, headers=auth(token), timeout=60).status_code != 401:
        assert time.monotonic() < deadline, "a revoked token kept working"
        time.sleep(0.2)
    assert token not in srv.log()  # no token ever reaches a log line
    for route in ("/v1/chat/completions", "/generate", "/tokenize"):  # every protocol is protected alike
        r = httpx.post(f"{srv.base_url}{route}", json={"inputs": "x", "messages": [{"role": "user", "content": "x"}]},
                       headers=auth(token), timeout=60)  # fmt: skip
        assert r.status_code == 401, route


def test_exactly_the_remaining_requests_succeed_under_concurrency(srv: Server) -> None:
    token = new_user(srv, "frank", "free")  # free: 5 requests per window in this config
    with ThreadPoolExecutor(12) as pool:
        responses = list(
            pool.map(lambda _: httpx.post(srv.model_url, json=BODY, headers=auth(token), timeout=120), range(12))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429] * 7
    limited = next(r for r in responses if r.status_code == 429)
    assert "free tier allows 5 requests" in limited.json()["error"]
    assert "set-tier" in limited.json()["error"]  # how to get more
    assert limited.headers["ratelimit"].startswith('"api";r=0;t=')
    assert limited.headers["ratelimit-policy"] == '"fixed window";"api";q=5;w=300'
    assert int(limited.headers["retry-after"]) >= 1
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.headers["ratelimit-policy"] == '"fixed window";"api";q=5;w=300'  # on successes too
    with pytest.raises(HfHubHTTPError) as info:  # the hub client reads the headers into its message
        InferenceClient(model=srv.model_url, token=token).text_generation("Hi", max_new_tokens=2)
    assert info.value.response.status_code == 429
    assert "rate limit" in str(info.value).lower()


def test_token_limits_reserve_max_new_tokens_exactly(srv: Server) -> None:
    token = new_user(srv, "grace", "pro")  # pro: 50 generated tokens per minute in this config
    body = {"inputs": "Count: one, two,", "parameters": {"max_new_tokens": 10}}
    with ThreadPoolExecutor(12) as pool:
        responses = list(
            pool.map(lambda _: httpx.post(srv.model_url, json=body, headers=auth(token), timeout=120), range(12))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429] * 7, [r.text for r in responses if r.status_code != 200][:2]
    error = next(r for r in responses if r.status_code == 429).json()["error"]
    assert "Token limit reached" in error and "50 generated tokens per minute" in error


def test_tier_caps_max_new_tokens(srv: Server) -> None:
    token = new_user(srv, "heidi", "pro")
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 5000}}  # pro's max_new_tokens is 4096
    r = httpx.post(srv.model_url, json=body, headers=auth(token), timeout=60)
    assert r.status_code == 422
    assert r.json()["error"].startswith("Input validation error: `max_new_tokens` must be <= 4096. Given: 5000")


def test_concurrent_requests_per_user(srv: Server) -> None:
    token = new_user(srv, "ivan", "enterprise")  # enterprise: 1 request in flight in this config
    long = {"inputs": "Count from one to five hundred: one, two, three,", "parameters": {"max_new_tokens": 200}}
    with httpx.Client(timeout=120) as c, c.stream("POST", f"{srv.base_url}/generate_stream", json=long,
                                                 headers=auth(token)) as first:  # fmt: skip
        assert first.status_code == 200
        # (a cache hit takes no slot, so this one asks for a fresh generation)
        fresh = {**auth(token), "x-use-cache": "0"}
        second = httpx.post(srv.model_url, json=BODY, headers=fresh, timeout=60)
        assert second.status_code == 429
        assert "1 at once" in second.json()["error"]
    deadline = time.monotonic() + 10  # closing the stream frees the slot
    while httpx.post(srv.model_url, json=BODY, headers=fresh, timeout=60).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_the_gated_model_is_for_pro_and_enterprise_only(srv: Server) -> None:
    free = new_user(srv, "judy", "free")
    pro = new_user(srv, "ken", "pro")
    models = {m["id"]: m for m in httpx.get(f"{srv.base_url}/v1/models", timeout=10).json()["data"]}
    assert models[GATED]["tiers"] == ["pro", "enterprise"]
    assert "free" in models[MODEL_ID]["tiers"]
    url = f"{srv.base_url}/models/{GATED}"
    for headers in (auth(free), {}):
        r = httpx.post(url, json=BODY, headers=headers, timeout=60)
        assert r.status_code == 403
        assert "pro and enterprise tiers" in r.json()["error"]
    # The PRO user's first call loads the model; x-wait-for-model holds it until the model is ready.
    r = httpx.post(url, json=BODY, headers={**auth(pro), "x-wait-for-model": "true"}, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()[0]["generated_text"].startswith("The capital of France is")
    # A cached answer of the gated model is never served to a free user: access is checked first.
    again = httpx.post(url, json=BODY, headers=auth(free), timeout=60)
    assert again.status_code == 403
    listed = run_cli(srv, "models", "list").stdout
    assert GATED in listed and "pro, enterprise" in listed


def test_the_result_cache_repeats_sampled_answers_until_told_not_to(srv: Server) -> None:
    token = new_user(srv, "leo", "enterprise")
    client = InferenceClient(model=srv.model_url, token=token)
    prompt = "Write a word about the sea:"
    first = httpx.post(srv.model_url, headers=auth(token), timeout=60,
                       json={"inputs": prompt, "parameters": {"do_sample": True, "max_new_tokens": 12}})  # fmt: skip
    second = httpx.post(srv.model_url, headers=auth(token), timeout=60,
                        json={"inputs": prompt, "parameters": {"do_sample": True, "max_new_tokens": 12}})  # fmt: skip
    assert first.headers["x-compute-type"] == "cpu"
    assert second.headers["x-compute-type"] == "cache"
    assert second.json() == first.json()
    # `stream` and `options` are not part of the key: a stream is replayed from the cache, same SSE format.
    with httpx.stream("POST", srv.model_url, headers=auth(token), timeout=60,
                      json={"inputs": prompt, "parameters": {"do_sample": True, "max_new_tokens": 12},
                            "stream": True}) as r:  # fmt: skip
        assert r.headers["x-compute-type"] == "cache"
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["generated_text"] == first.json()[0]["generated_text"]
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    # Bypass: the header the announcement shows, its `false` spelling, and the body option.
    texts = set()
    for headers, options in (({"x-use-cache": "0"}, None), ({"x-use-cache": "false"}, None), ({}, False)):
        body: dict[str, object] = {"inputs": prompt, "parameters": {"do_sample": True, "max_new_tokens": 12}}
        if options is not None:
            body["options"] = {"use_cache": options}
        r = httpx.post(srv.model_url, headers={**auth(token), **headers}, json=body, timeout=60)
        assert r.headers["x-compute-type"] == "cpu"
        texts.add(r.json()[0]["generated_text"])
    assert len(texts) > 1  # fresh sampled generations differ
    client.headers["x-use-cache"] = "0"  # the announcement's way, through the client
    assert client.text_generation(prompt, do_sample=True, max_new_tokens=5)
    # The OpenAI route caches too, and says so.
    oa = OpenAI(base_url=f"{srv.base_url}/v1", api_key=token)
    msgs = [{"role": "user", "content": "Say hi"}]
    a = oa.chat.completions.with_raw_response.create(model=MODEL_ID, messages=msgs, max_tokens=5)  # type: ignore[arg-type]
    b = oa.chat.completions.with_raw_response.create(model=MODEL_ID, messages=msgs, max_tokens=5)  # type: ignore[arg-type]
    assert b.headers["x-compute-type"] == "cache"
    assert a.parse().choices[0].message.content == b.parse().choices[0].message.content


def test_admin_api_is_for_admin_tokens_only(srv: Server) -> None:
    admin = new_user(srv, "root", "enterprise", "--admin")
    user = new_user(srv, "mallory", "free")
    base = srv.base_url
    assert httpx.get(f"{base}/admin/users", headers=auth(user), timeout=10).status_code == 403
    assert httpx.get(f"{base}/admin/users", timeout=10).status_code == 403
    r = httpx.post(f"{base}/admin/users", json={"name": "nina", "tier": "pro"}, headers=auth(admin), timeout=10)
    assert r.status_code == 201 and r.json()["tier"] == "pro"
    r = httpx.post(f"{base}/admin/users/nina/tokens", headers=auth(admin), timeout=10)
    assert r.status_code == 201
    nina = r.json()["token"]
    assert httpx.post(srv.model_url, json=BODY, headers=auth(nina), timeout=60).status_code == 200
    names = [u["name"] for u in httpx.get(f"{base}/admin/users", headers=auth(admin), timeout=10).json()]
    assert "nina" in names and "mallory" in names
    r = httpx.patch(f"{base}/admin/users/nina", json={"tier": "enterprise"}, headers=auth(admin), timeout=10)
    assert r.json()["tier"] == "enterprise"
    # Disabled, nina's token is refused at once, saying why; enabled again (with the CLI), it works again.
    r = httpx.patch(f"{base}/admin/users/nina", json={"disabled": True}, headers=auth(admin), timeout=10)
    assert r.status_code == 200 and r.json()["disabled"] is True
    refused = httpx.post(srv.model_url, json=BODY, headers=auth(nina), timeout=60)
    assert refused.status_code == 401 and "disabled" in refused.json()["error"]
    listed = run_cli(srv, "users", "list").stdout.splitlines()
    assert any(line.split()[0] == "nina" and "disabled" in line for line in listed)
    run_cli(srv, "users", "enable", "nina")
    time.sleep(1.2)  # the CLI is another process: running servers see it within auth.token_cache_ttl_s (1 s)
    assert httpx.post(srv.model_url, json=BODY, headers=auth(nina), timeout=60).status_code == 200
    r = httpx.patch(f"{base}/admin/users/nina", json={}, headers=auth(admin), timeout=10)
    assert r.status_code == 400 and "nothing to change" in r.json()["error"]
    r = httpx.post(f"{base}/admin/tokens/revoke", json={"token": nina}, headers=auth(admin), timeout=10)
    assert r.status_code == 200
    # Revoked through this server: refused at once, not after the token cache's TTL.
    assert httpx.post(srv.model_url, json=BODY, headers=auth(nina), timeout=60).status_code == 401
    r = httpx.patch(f"{base}/admin/users/nobody", json={"tier": "pro"}, headers=auth(admin), timeout=10)
    assert r.status_code == 404
    usage = httpx.get(f"{base}/admin/usage", params={"user": "nina"}, headers=auth(admin), timeout=10).json()
    assert sum(row["requests"] for row in usage) >= 1


def test_usage_is_recorded_and_flushed_on_shutdown(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs on its own server so that it can stop it: every request is in the table afterwards."""
    server = start_server(tmp_path_factory.mktemp("usage"))
    try:
        server.wait_healthy()
        token = new_user(server, "olga", "free")
        for _ in range(3):
            assert httpx.post(server.model_url, json=BODY, headers=auth(token), timeout=60).status_code == 200
        assert httpx.post(server.model_url, json={"inputs": ""}, headers=auth(token), timeout=60).status_code == 422
        httpx.post(server.model_url, json=BODY, timeout=60)  # anonymous
    finally:
        server.stop()
    table = run_cli(server, "usage").stdout
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["olga"][1] == MODEL_ID
    assert rows["olga"][2] == "4"  # requests
    assert rows["olga"][5] == "2"  # cache hits: the 2nd and 3rd identical requests
    assert rows["olga"][6] == "1"  # errors: the empty prompt
    assert "(anonymous)" in rows
    last_used = run_cli(server, "tokens", "list", "olga").stdout
    assert "never" not in last_used
