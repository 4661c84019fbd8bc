"""A gateway in front of real remote engines: llama.cpp's own OpenAI-compatible server (two replicas) and
infergate in engine mode. Every protocol through the gateway, answers equal to the engine's own, failover when a
replica is SIGKILLed under load, a stream cut mid-way, all replicas down, a replica that comes back, and a
client that leaves stopping the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import InferenceClient
from openai import OpenAI

from tests.support.remote import (
    SERVICE_TOKEN,
    LlamaServer,
    engine_mode_server,
    gateway_config,
    llama_server,
    start_gateway,
)
from tests.support.server import MODEL_ID, Server, free_port, run_cli, run_together

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def llamas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LlamaServer]]:
    tmp = tmp_path_factory.mktemp("llama")
    servers = [llama_server(tmp), llama_server(tmp)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, llamas: list[LlamaServer]) -> Iterator[Server]:
    srv = start_gateway(tmp_path_factory.mktemp("gw"), gateway_config([s.url for s in llamas]))
    srv.wait_healthy(60)
    yield srv
    srv.stop()


# What a request without a repetition penalty means; llama.cpp's server applies 1.1 when it is not said.
NO_PENALTY = {"repeat_penalty": 1.0}


def _direct_completion(url: str, prompt: str, max_tokens: int) -> str:
    body = {"model": MODEL_ID, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **NO_PENALTY}
    return str(httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"])


def _direct_chat(url: str, content: str, max_tokens: int) -> str:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, **NO_PENALTY}  # fmt: skip
    return str(
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]["content"]
    )


def test_every_protocol_answers_as_the_engine_does(gateway: Server, llamas: list[LlamaServer]) -> None:
    expected = _direct_completion(llamas[0].url, PROMPT, 8)
    assert expected.strip()
    # The HF task API (huggingface_hub, as the announcement calls it)
    hf = InferenceClient(model=gateway.model_url)
    assert hf.text_generation(PROMPT, max_new_tokens=8) == PROMPT + expected  # the HF API returns the full text
    # TGI: details built from the engine's logprobs
    out = httpx.post(
        f"{gateway.base_url}/generate",
        json={"inputs": PROMPT, "parameters": {"max_new_tokens": 8, "details": True, "top_n_tokens": 2}},
        timeout=60,
    ).json()
    assert out.get("generated_text") == expected, out
    details = out["details"]
    assert details["finish_reason"] == "length" and details["generated_tokens"] == 8
    assert "".join(t["text"] for t in details["tokens"]) == expected
    assert all(t["logprob"] is not None and t["logprob"] <= 0 for t in details["tokens"])
    assert all(len(top) == 2 for top in details["top_tokens"])
    # TGI stream
    streamed = "".join(hf.text_generation(PROMPT, max_new_tokens=8, stream=True))
    assert streamed == expected
    # OpenAI completions and chat (the engine applies its own chat template)
    client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key="EMPTY")
    completion = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=8, temperature=0)
    assert completion.choices[0].text == expected
    chat_expected = _direct_chat(llamas[0].url, "Say hello.", 10)
    chat = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=10, temperature=0
    )
    assert chat.choices[0].message.content == chat_expected
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat_expected
    # llama.cpp's server reports no usage in a stream: the prompt's length is unknown, the generated count is not
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10


def test_what_the_backend_cannot_do_is_a_422_that_says_so(gateway: Server) -> None:
    response = httpx.post(
        f"{gateway.base_url}/generate",
        json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "decoder_input_details": True}},
        timeout=30,
    )
    assert response.status_code == 422
    assert "decoder_input_details" in response.json()["error"]


def test_models_list_shows_each_replica(gateway: Server, llamas: list[LlamaServer]) -> None:
    model = next(m for m in httpx.get(f"{gateway.base_url}/v1/models").json()["data"] if m["id"] == MODEL_ID)
    assert [r["url"] for r in model["replicas"]] == [s.url for s in llamas]
    assert {r["state"] for r in model["replicas"]} == {"up"}
    metrics = httpx.get(f"{gateway.base_url}/metrics").text
    assert f'infergate_replica_up{{model="{MODEL_ID}",replica="{llamas[0].url}"}} 1.0' in metrics
    listing = run_cli(gateway, "models", "list", "--url", gateway.base_url).stdout
    rows = [line.split() for line in listing.splitlines()]
    assert all([MODEL_ID, s.url, "up", "0", "-"] in rows for s in llamas), listing


def test_engine_mode_will_not_start_without_a_service_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "INFERGATE_SERVICE_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "infergate", "serve", "--engine", "--port", str(free_port())],
        env={**env, "INFERGATE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "INFERGATE_SERVICE_TOKEN" in done.stderr


def test_all_replicas_down_is_a_fast_clear_503(tmp_path: Path) -> None:
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    srv = start_gateway(tmp_path / "gw", gateway_config(dead))
    try:
        started = time.monotonic()
        response = httpx.post(srv.model_url, json={"inputs": PROMPT}, timeout=30)
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        assert "Retry-After" in response.headers
        message = response.json()["error"]
        assert "remote engines" in message and dead[0] in message or "marked down" in message
    finally:
        srv.stop()


def _load(url: str, stop: threading.Event, results: list[tuple[int, str]]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            r = client.post(url, json={"inputs": PROMPT, "parameters": {"max_new_tokens": 4}})
            results.append((r.status_code, r.text[:200]))


def test_a_replica_killed_under_load_loses_no_request_and_comes_back(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("llama-kill")
    replicas = [llama_server(tmp), llama_server(tmp)]
    srv = start_gateway(tmp_path / "gw", gateway_config([s.url for s in replicas]))
    try:
        srv.wait_healthy(60)
        stop, results = threading.Event(), []  # type: ignore[var-annotated]
        workers = [threading.Thread(target=_load, args=(srv.model_url, stop, results)) for _ in range(6)]
        for w in workers:
            w.start()
        time.sleep(2.0)
        replicas[0].kill()
        time.sleep(3.0)
        stop.set()
        for w in workers:
            w.join()
        failed = [r for r in results if r[0] != 200]
        assert len(results) > 10 and not failed, failed[:3]
        model = httpx.get(f"{srv.base_url}/v1/models").json()["data"][0]
        states = {r["url"]: r for r in model["replicas"]}
        assert states[replicas[0].url]["state"] == "ejected" and states[replicas[0].url]["last_error"]
        # It comes back at the same URL: the probe sees it and it takes requests again.
        replicas[0].start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            model = httpx.get(f"{srv.base_url}/v1/models").json()["data"][0]
            if all(r["state"] == "up" for r in model["replicas"]):
                break
            time.sleep(0.2)
        assert all(r["state"] == "up" for r in model["replicas"]), model["replicas"]
        before = _requests_on(srv, replicas[0].url)
        run_together([lambda: httpx.post(srv.model_url, json={"inputs": PROMPT}, timeout=60)] * 6)
        assert _requests_on(srv, replicas[0].url) > before
    finally:
        srv.stop()
        for s in replicas:
            s.stop()


def _requests_on(srv: Server, url: str) -> float:
    for line in httpx.get(f"{srv.base_url}/metrics").text.splitlines():
        if line.startswith("infergate_replica_requests_total{") and f'replica="{url}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no infergate_replica_requests_total for {url}")


def test_a_stream_whose_engine_dies_ends_in_an_error_event(tmp_path: Path) -> None:
    engine = llama_server(tmp_path)
    srv = start_gateway(tmp_path / "gw", gateway_config([engine.url]))
    try:
        srv.wait_healthy(60)
        body = {"model": MODEL_ID, "prompt": "Write a long story about a dragon.", "max_tokens": 400, "stream": True}
        lines: list[str] = []
        with httpx.stream("POST", f"{srv.base_url}/v1/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:"):
                    lines.append(line[5:].strip())
                    if len(lines) == 3:
                        engine.kill()
        assert "[DONE]" not in lines
        last = json.loads(lines[-1])
        assert "error" in last and "retry" in last["error"]["message"].lower()
        assert all(c["choices"][0]["finish_reason"] is None for c in map(json.loads, lines[:-1]) if "choices" in c)
    finally:
        srv.stop()
        engine.stop()


@pytest.fixture(scope="module")
def engine_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = engine_mode_server(tmp_path_factory.mktemp("engine"))
    srv.wait_healthy()
    yield srv
    srv.stop()


def test_engine_mode_serves_only_the_service_token(engine_node: Server) -> None:
    refused = httpx.post(engine_node.model_url, json={"inputs": PROMPT}, timeout=30)
    assert refused.status_code == 401 and "engine mode" in refused.json()["error"]
    ok = httpx.post(
        engine_node.model_url,
        json={"inputs": PROMPT, "parameters": {"max_new_tokens": 3}},
        headers={"authorization": f"Bearer {SERVICE_TOKEN}"},
        timeout=60,
    )
    assert ok.status_code == 200, ok.text


def test_a_gateway_in_front_of_infergate_in_engine_mode(tmp_path: Path, engine_node: Server) -> None:
    srv = start_gateway(tmp_path / "gw", gateway_config([engine_node.base_url], protocol="infergate"))
    auth = {"authorization": f"Bearer {SERVICE_TOKEN}"}
    try:
        srv.wait_healthy(60)
        body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 6, "details": True, "decoder_input_details": True}}
        direct = httpx.post(f"{engine_node.model_url}/generate", json=body, headers=auth, timeout=60).json()
        through = httpx.post(f"{srv.base_url}/generate", json=body, timeout=60).json()
        assert through.get("generated_text") == direct["generated_text"], (through, direct)
        assert [t["id"] for t in through["details"]["tokens"]] == [t["id"] for t in direct["details"]["tokens"]]
        assert [t["text"] for t in through["details"]["prefill"]] == [t["text"] for t in direct["details"]["prefill"]]
        client = OpenAI(base_url=f"{srv.base_url}/v1", api_key="EMPTY")
        # OpenAI's completions served from the engine's TGI routes
        completion = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=6, temperature=0)
        assert PROMPT + completion.choices[0].text == PROMPT + direct["generated_text"]
        assert completion.usage is not None and completion.usage.prompt_tokens == len(direct["details"]["prefill"])
        chat = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
        )
        own = OpenAI(base_url=f"{engine_node.model_url}/v1", api_key=SERVICE_TOKEN).chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
        )
        assert chat.choices[0].message.content == own.choices[0].message.content
        # The engine's prefix cache shows through the gateway: a second chat with the same system prompt was cached
        # there, and says so in its usage (streamed or not).
        system = "You are a careful assistant. " + " ".join(f"Rule {i}: answer in one line." for i in range(30))
        for question in ("Hi.", "Hello."):
            messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            kept = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=4, temperature=0)  # type: ignore[arg-type]
        assert kept.usage is not None and kept.usage.prompt_tokens_details is not None
        assert kept.usage.prompt_tokens_details.cached_tokens >= 64
        messages[1]["content"] = "Good day."
        stream = client.chat.completions.create(
            model=MODEL_ID,
            messages=messages,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
        usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
        assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens >= 64
        # A client that leaves closes the upstream request: the engine stops generating.
        long = {"inputs": "Write a long story.", "parameters": {"max_new_tokens": 1500}}
        with httpx.stream("POST", f"{srv.base_url}/generate_stream", json=long, timeout=60) as response:
            seen = 0
            for line in response.iter_lines():
                seen += line.startswith("data:")
                if seen == 3:
                    break
        assert _active(engine_node) is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _active(engine_node) != 0:
            time.sleep(0.1)
        assert _active(engine_node) == 0
    finally:
        srv.stop()


def _active(srv: Server) -> float | None:
    for line in httpx.get(f"{srv.base_url}/metrics").text.splitlines():
        if line.startswith("infergate_active_sequences{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_embeddings_from_a_remote_engine(tmp_path: Path, engine_node: Server) -> None:
    embedder = "sentence-transformers/all-MiniLM-L6-v2"
    config = (
        gateway_config([engine_node.base_url], protocol="infergate")
        + f"""
[[models]]
id = "{embedder}"
task = "feature-extraction"
remote = ["{engine_node.base_url}"]
protocol = "infergate"
"""
    )
    srv = start_gateway(tmp_path / "gw", config)
    try:
        srv.wait_healthy(60)
        through = InferenceClient(model=f"{srv.base_url}/models/{embedder}").feature_extraction("Hello world")
        own = InferenceClient(model=f"{engine_node.base_url}/models/{embedder}", token=SERVICE_TOKEN)
        direct = own.feature_extraction("Hello world")
        assert through.shape == direct.shape and abs(through - direct).max() < 1e-5
        scores = InferenceClient(model=f"{srv.base_url}/models/{embedder}").sentence_similarity(
            "A cat sits.", ["A cat is sitting.", "Stock markets fell."]
        )
        assert scores[0] > scores[1]
    finally:
        srv.stop()


def test_plain_tgi_protocol_with_the_key_from_the_named_variable(tmp_path: Path, engine_node: Server) -> None:
    """`protocol = "tgi"` (TGI's routes at the root, as TGI serves them), its key from `api_key_env`; a replica
    that refuses the key is ejected and the 503 says which setting to check."""
    config = gateway_config([engine_node.base_url], protocol="tgi") + 'api_key_env = "ENGINE_KEY"\n'
    srv = start_gateway(tmp_path / "gw", config, env={"ENGINE_KEY": SERVICE_TOKEN})
    try:
        srv.wait_healthy(60)
        body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 5}}
        auth = {"authorization": f"Bearer {SERVICE_TOKEN}"}
        direct = httpx.post(f"{engine_node.base_url}/generate", json=body, headers=auth, timeout=60).json()
        client = InferenceClient(model=srv.model_url)  # held: a collected client closes its streams
        streamed = "".join(client.text_generation(PROMPT, max_new_tokens=5, stream=True))
        assert streamed == direct["generated_text"]
    finally:
        srv.stop()
    wrong = start_gateway(tmp_path / "gw-wrong", config, env={"ENGINE_KEY": "not-the-token"})
    try:
        refused = httpx.post(wrong.model_url, json=body, timeout=30)
        assert refused.status_code == 503 and "api_key_env" in refused.json()["error"], refused.text
    finally:
        wrong.stop()


def test_structured_outputs_and_tools_through_a_gateway(tmp_path: Path, engine_node: Server) -> None:
    """Schemas, grammars and tools go through to the engine (infergate's OpenAI fields, TGI's grammar) and its
    tool calls come back as the SDK reads them: the same answers as the engine's own."""
    via_tgi = "smollm2/via-tgi"
    config = gateway_config([engine_node.base_url], protocol="infergate") + (
        f'\n[[models]]\nid = "{via_tgi}"\ntask = "text-generation"\nremote = ["{engine_node.base_url}"]\n'
        f'protocol = "tgi"\nremote_model = "{MODEL_ID}"\napi_key_env = "ENGINE_KEY"\n'
    )
    srv = start_gateway(tmp_path / "gw", config, env={"ENGINE_KEY": SERVICE_TOKEN})
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": schema},
    }
    question = [{"role": "user", "content": "Is it sunny in Paris?"}]
    try:
        srv.wait_healthy(60)
        through = OpenAI(base_url=f"{srv.base_url}/v1", api_key="EMPTY")
        own = OpenAI(base_url=f"{engine_node.model_url}/v1", api_key=SERVICE_TOKEN)
        shape: Any = {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}}
        answers = [
            c.chat.completions.create(
                model=MODEL_ID, messages=question, response_format=shape, max_tokens=40, temperature=0
            )
            for c in (through, own)
        ]
        assert answers[0].choices[0].message.content == answers[1].choices[0].message.content
        json.loads(answers[0].choices[0].message.content or "")
        for stream in (False, True):
            calls = []
            for client in (through, own):
                out = client.chat.completions.create(
                    model=MODEL_ID,
                    messages=question,
                    tools=[weather],
                    tool_choice="required",
                    parallel_tool_calls=False,
                    max_tokens=60,
                    temperature=0,
                    stream=stream,
                )
                if stream:
                    deltas = [d for chunk in out for c in chunk.choices for d in c.delta.tool_calls or []]
                    calls.append((deltas[0].function.name, "".join(d.function.arguments or "" for d in deltas)))
                else:
                    call = out.choices[0].message.tool_calls[0]
                    assert out.choices[0].finish_reason == "tool_calls"
                    calls.append((call.function.name, call.function.arguments))
            assert calls[0] == calls[1] and calls[0][0] == "get_weather", calls
            json.loads(calls[0][1])
        # TGI's grammar, to an infergate engine and to a TGI one
        body = {
            "inputs": "Is it sunny?",
            "parameters": {"max_new_tokens": 5, "grammar": {"type": "regex", "value": "(yes|no)"}},
        }
        for model in (MODEL_ID, via_tgi):
            r = httpx.post(
                f"{srv.base_url}/models/{model}",
                json={**body, "parameters": {**body["parameters"], "return_full_text": False}},
                timeout=60,
            )  # type: ignore[dict-item]
            assert r.status_code == 200 and r.json()[0]["generated_text"] in ("yes", "no"), r.text
    finally:
        srv.stop()
