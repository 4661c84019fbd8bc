"""The JavaScript clients users already have, run by Node against a real server: huggingface.js
(`@huggingface/inference`, pointed at the model's URL as its README shows for an Inference Endpoint) and the
`openai` npm package, at the versions tests/clients/js/package-lock.json pins. tests/clients/js/run.mjs runs one
scenario per call and prints what came back, with the requests the client sent, as JSON; each test checks the
answer against what the HTTP API gives for the same request.

Needs `node` (20+) and `npm`; the tests skip without them, and install the pinned packages (`npm ci`) when
node_modules is missing or stale."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.node import node_with_packages
from tests.support.server import MODEL_ID, Server

JS_DIR = Path(__file__).resolve().parents[1] / "clients" / "js"
EMBED_ID = "sentence-transformers/all-MiniLM-L6-v2"
PROMPT = "The capital of France is"
MAX_TOKENS = 8
FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]  # run.mjs's
NODE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the pinned client packages installed."""
    return node_with_packages(JS_DIR, "the JavaScript client tests")


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, headers={"authorization": f"Bearer {server.token}"}, timeout=120
    ) as client:
        yield client


def run_js(node: str, server: Server, scenario: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "INFERGATE_URL": server.base_url,
        "INFERGATE_TOKEN": server.token,
        "INFERGATE_MODEL": MODEL_ID,
        "INFERGATE_EMBEDDING_MODEL": EMBED_ID,
        "INFERGATE_PROMPT": PROMPT,
        "INFERGATE_MAX_TOKENS": str(MAX_TOKENS),
    }
    done = subprocess.run(
        [node, "run.mjs", scenario], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=NODE_TIMEOUT_S
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"{scenario}: no output (exit {done.returncode}):\n{done.stderr}"
    out: dict[str, Any] = json.loads(lines[-1])
    assert done.returncode == 0, f"{scenario} failed: {json.dumps(out, indent=1)}\n{done.stderr}"
    return out


def only_request(out: dict[str, Any]) -> dict[str, Any]:
    assert len(out["requests"]) == 1, out["requests"]  # no 503 retries, no hub look-ups
    request: dict[str, Any] = out["requests"][0]
    assert request["headers"]["authorization"] == "Bearer <token>"
    return request


# The HTTP API's answers to the requests the scenarios make, each asked once (greedy, so they do not change).


@pytest.fixture(scope="module")
def expected_text(http: httpx.Client) -> str:
    """The HF API's greedy text for the prompt, without the prompt (the JS clients' text never has it)."""
    parameters = {"max_new_tokens": MAX_TOKENS, "do_sample": False, "return_full_text": False}
    r = http.post(f"/models/{MODEL_ID}", json={"inputs": PROMPT, "parameters": parameters})
    assert r.status_code == 200, r.text
    text: str = r.json()[0]["generated_text"]
    assert text.strip()
    return text


@pytest.fixture(scope="module")
def expected_chat(http: httpx.Client) -> dict[str, Any]:
    """The greedy chat choice for run.mjs's question."""
    body = {"model": MODEL_ID, "messages": FRANCE, "max_tokens": MAX_TOKENS, "temperature": 0}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice: dict[str, Any] = r.json()["choices"][0]
    assert choice["message"]["content"].strip()
    return choice


@pytest.fixture(scope="module")
def expected_vectors(http: httpx.Client) -> np.ndarray:
    r = http.post(f"/models/{EMBED_ID}", json={"inputs": ["a cat", "a dog"]})
    assert r.status_code == 200, r.text
    return np.array(r.json())


# --- @huggingface/inference ---------------------------------------------------------------------------


def test_hf_text_generation_is_the_http_apis_greedy_text(node: str, server: Server, expected_text: str) -> None:
    out = run_js(node, server, "hf.textGeneration")
    request = only_request(out)
    # 4.x sends text generation to the endpoint's /v1/completions, TGI's parameters flattened into the body,
    # and the endpoint URL as the model.
    assert request["url"] == f"{server.model_url}/v1/completions"
    assert request["body"] == {
        "model": server.model_url,
        "max_tokens": MAX_TOKENS,
        "do_sample": False,
        "prompt": PROMPT,
    }
    assert out["output"] == {"generated_text": expected_text}


def test_hf_text_generation_stream_gives_tgi_tokens(node: str, server: Server, expected_text: str) -> None:
    out = run_js(node, server, "hf.textGenerationStream")
    request = only_request(out)
    assert request["url"] == f"{server.model_url}/v1/completions"
    assert request["body"]["stream"] is True
    # Code written for the HF API reads `token.text` and the last event's `generated_text`; code written
    # against 4.x and a TGI endpoint reads OpenAI's `choices[0].text`: both work.
    assert all(isinstance(t, str) for t in out["tokens"]), out["chunks"]
    assert "".join(out["tokens"]) == expected_text
    assert out["generated_text"] == expected_text
    assert "".join(c["choices"][0]["text"] for c in out["chunks"]) == expected_text
    assert [c["generated_text"] for c in out["chunks"][:-1]] == [None] * (len(out["chunks"]) - 1)
    assert out["chunks"][-1]["choices"][0]["finish_reason"] == "length"


def test_hf_chat_completion(node: str, server: Server, expected_chat: dict[str, Any]) -> None:
    out = run_js(node, server, "hf.chatCompletion")
    request = only_request(out)
    assert request["url"] == f"{server.model_url}/v1/chat/completions"
    assert request["body"]["model"] == server.model_url
    assert out["content"] == expected_chat["message"]["content"]
    assert out["output"]["model"] == MODEL_ID
    assert 0 < out["output"]["usage"]["completion_tokens"] <= MAX_TOKENS


def test_hf_chat_completion_on_the_servers_v1_url(node: str, server: Server, expected_chat: dict[str, Any]) -> None:
    """The README's form for local servers, `endpointUrl: "http://host/v1/"`: the body's model is that URL,
    which means the server's model."""
    out = run_js(node, server, "hf.chatCompletion.v1")
    request = only_request(out)
    assert request["url"] == f"{server.base_url}/v1/chat/completions"
    assert request["body"]["model"] == f"{server.base_url}/v1/"
    assert out["content"] == expected_chat["message"]["content"]


def test_hf_chat_completion_stream(node: str, server: Server, expected_chat: dict[str, Any]) -> None:
    out = run_js(node, server, "hf.chatCompletionStream")
    request = only_request(out)
    assert request["url"] == f"{server.model_url}/v1/chat/completions"
    assert request["body"]["stream"] is True
    assert out["content"] == expected_chat["message"]["content"]
    assert out["chunks"][-1]["choices"][0]["finish_reason"] == expected_chat["finish_reason"]


def test_hf_feature_extraction(node: str, server: Server, http: httpx.Client) -> None:
    # On a 503 huggingface.js retries at once, without end or pause, and it cannot send `x-wait-for-model`; the
    # server waits for a model that is not loaded yet, so even a first call is one request that succeeds.
    out = run_js(node, server, "hf.featureExtraction")
    request = only_request(out)
    assert request["url"] == f"{server.base_url}/models/{EMBED_ID}"
    assert request["body"] == {"inputs": ["a cat", "a dog"]}
    vectors = np.array(out["output"])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    r = http.post(f"/models/{EMBED_ID}", json={"inputs": ["a cat", "a dog"]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(vectors, np.array(r.json()), atol=1e-5)


def test_hf_sentence_similarity(node: str, server: Server, http: httpx.Client) -> None:
    out = run_js(node, server, "hf.sentenceSimilarity")
    request = only_request(out)
    assert request["url"] == f"{server.base_url}/models/{EMBED_ID}"
    inputs = {"source_sentence": "a cat", "sentences": ["a kitten", "a car"]}
    assert request["body"] == {"inputs": inputs}
    kitten, car = out["output"]
    assert kitten > car
    r = http.post(f"/models/{EMBED_ID}", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(out["output"], r.json(), atol=1e-5)


# --- openai ------------------------------------------------------------------------------------------------


def test_openai_chat(node: str, server: Server, expected_chat: dict[str, Any]) -> None:
    out = run_js(node, server, "openai.chat")
    assert only_request(out)["url"] == f"{server.base_url}/v1/chat/completions"
    assert out["content"] == expected_chat["message"]["content"]
    assert 0 < out["output"]["usage"]["completion_tokens"] <= MAX_TOKENS


def test_openai_chat_stream(node: str, server: Server, expected_chat: dict[str, Any]) -> None:
    out = run_js(node, server, "openai.chat.stream")
    assert only_request(out)["body"]["stream"] is True
    assert out["content"] == expected_chat["message"]["content"]
    assert out["finish_reason"] == expected_chat["finish_reason"]
    assert 0 < out["usage"]["completion_tokens"] <= MAX_TOKENS
    assert out["usage"]["prompt_tokens"] > 0


def test_openai_chat_tool_call(node: str, server: Server) -> None:
    out = run_js(node, server, "openai.chat.tools")
    assert out["finish_reason"] == "tool_calls" and len(out["toolCalls"]) == 1
    call = out["toolCalls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert set(json.loads(call["function"]["arguments"])) == {"city"}


def test_openai_chat_json_schema(node: str, server: Server) -> None:
    out = run_js(node, server, "openai.chat.json")
    answer = json.loads(out["content"])
    assert out["finish_reason"] == "stop" and set(answer) == {"name", "big"} and isinstance(answer["big"], bool)


def test_openai_completions(node: str, server: Server, expected_text: str) -> None:
    out = run_js(node, server, "openai.completions")
    assert only_request(out)["url"] == f"{server.base_url}/v1/completions"
    assert out["text"] == expected_text
    assert out["output"]["choices"][0]["finish_reason"] == "length"


def test_openai_embeddings(node: str, server: Server, expected_vectors: np.ndarray) -> None:
    out = run_js(node, server, "openai.embeddings")
    request = only_request(out)
    assert request["url"] == f"{server.base_url}/v1/embeddings"
    assert request["body"]["encoding_format"] == "base64"  # the client's default; it decodes the floats
    vectors = np.array(out["embeddings"])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(vectors, expected_vectors, atol=1e-5)
    assert out["model"] == EMBED_ID
    assert out["usage"]["prompt_tokens"] > 0
