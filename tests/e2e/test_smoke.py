"""The README's quick start, as a newcomer runs it."""

from __future__ import annotations

import httpx
from huggingface_hub import InferenceClient

from tests.support.server import MODEL_ID, Server


def test_health_was_503_while_loading_then_200(server: Server) -> None:
    assert server.health_seen[-1] == 200
    assert 503 in server.health_seen, "the first health checks should see the model still loading"


def test_readme_curl_answers_a_list_with_the_prompt(server: Server) -> None:
    prompt = "In a surprising turn of events, "
    r = httpx.post(
        server.model_url,
        json={"inputs": prompt},
        timeout=60,
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["generated_text"].startswith(prompt)
    assert len(body[0]["generated_text"]) > len(prompt)
    assert r.headers["x-compute-type"] == "cpu"
    assert int(r.headers["x-generated-tokens"]) <= 20
    assert int(r.headers["x-prompt-tokens"]) > 0
    assert float(r.headers["x-compute-time"]) > 0
    assert r.headers["x-compute-characters"] == str(len(prompt))


def test_readme_chat_knows_the_capital_of_france(server: Server) -> None:
    client = InferenceClient(model=server.model_url)
    out = client.chat_completion(
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        max_tokens=20,
        temperature=0,
    )
    assert "Paris" in out.choices[0].message.content
    assert out.model == MODEL_ID
