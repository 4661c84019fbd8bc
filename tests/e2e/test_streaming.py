"""TGI / HF Inference API streaming (protocol.md §1.4, §2.5, §6 cases 9-12): the hub client's view, and the raw
Server-Sent Events checked byte by byte with httpx."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError
from huggingface_hub.inference._generated.types import TextGenerationStreamOutput

from tests.support.server import MODEL_ID, Server

PROMPT = "Once upon a time, in a small village,"
MODEL_PATH = f"/models/{MODEL_ID}"
FINISH_REASONS = {"length", "eos_token", "stop_sequence"}
# SmolLM2 answers this greedily with CJK and emoji (several byte-fallback tokens per character), then stops with
# EOS within 24 tokens, so the whole answer is made of complete characters.
MULTIBYTE_PROMPT = '<|im_start|>user\nRepeat exactly: "你好世界 😀🎉"<|im_end|>\n<|im_start|>assistant\n'
# Greedy, this runs to the token limit (no early EOS): the model repeats the emoji.
LONG_PROMPT = "<|im_start|>user\nReply with one emoji: 😀<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def hub(server: Server) -> InferenceClient:
    """`InferenceClient(model=f"{base}/models/{MODEL_ID}")` (protocol §6: `C`)."""
    # x-use-cache: 0: streamed and non-streamed answers are compared, both must come from the engine.
    return InferenceClient(model=server.model_url, timeout=120, headers={"x-use-cache": "0"})


def sse_payloads(raw: bytes) -> list[dict[str, Any]]:
    """Split a TGI event stream into JSON payloads, asserting the exact framing on the way: every event is
    `data: {json}\\n\\n` with the space, nothing else (no comments, no `event:` lines, no `[DONE]`)."""
    assert raw.endswith(b"\n\n"), raw[-200:]
    text = raw.decode("utf-8")  # strict: a split multi-byte character would fail here
    events = text[: -len("\n\n")].split("\n\n")
    payloads = []
    for event in events:
        assert event.startswith("data: {"), f"bad event framing: {event[:120]!r}"
        assert "\n" not in event, f"an event is one `data:` line: {event[:120]!r}"
        assert event != "data: [DONE]", "no [DONE] on TGI routes"
        payload = json.loads(event[len("data: ") :])
        assert isinstance(payload, dict)
        payloads.append(payload)
    assert payloads, "an empty stream"
    return payloads


def stream_raw(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
    with client.stream("POST", path, json=body) as r:
        raw = r.read()
    return r, raw


def assert_token_events(events: list[dict[str, Any]], prefix: str) -> None:
    """TGI's event shapes: intermediate events carry nulls, the last one the full text."""
    for i, event in enumerate(events, start=1):
        assert set(event) == {"index", "token", "generated_text", "details"}, event
        assert event["index"] == i, "index counts tokens from 1"
        token = event["token"]
        assert set(token) == {"id", "text", "logprob", "special"}
        assert isinstance(token["id"], int)
        assert isinstance(token["text"], str)
        assert isinstance(token["logprob"], float) and token["logprob"] <= 0.0
        assert isinstance(token["special"], bool)
    for event in events[:-1]:
        assert event["generated_text"] is None and event["details"] is None, event
    text = "".join(e["token"]["text"] for e in events if not e["token"]["special"])
    assert events[-1]["generated_text"] == prefix + text


# -- the hub client (§6 cases 9, 10, 12) -------------------------------------------------------------------


def test_hub_stream_yields_at_most_12_str_tokens(hub: InferenceClient) -> None:
    tokens = list(hub.text_generation(PROMPT, max_new_tokens=12, stream=True))
    assert 1 <= len(tokens) <= 12
    assert all(isinstance(t, str) for t in tokens)
    # Greedy both ways: the streamed tokens are the continuation that the non-stream call returns after the prompt.
    assert PROMPT + "".join(tokens) == hub.text_generation(PROMPT, max_new_tokens=12)


def test_hub_stream_with_details_ends_with_details(hub: InferenceClient, client: httpx.Client) -> None:
    items = list(hub.text_generation(PROMPT, max_new_tokens=12, stream=True, details=True))
    assert 1 <= len(items) <= 12
    assert all(isinstance(item, TextGenerationStreamOutput) for item in items)
    assert [item.index for item in items] == list(range(1, len(items) + 1))
    assert all(item.details is None and item.generated_text is None for item in items[:-1])
    last = items[-1]
    assert last.details is not None
    assert last.details.finish_reason in FINISH_REASONS
    assert last.details.generated_tokens == len(items)
    prompt_tokens = client.post("/tokenize", json={"inputs": PROMPT}).json()
    assert last.details.input_length == len(prompt_tokens)
    assert last.generated_text == PROMPT + "".join(i.token.text for i in items if not i.token.special)


def test_hub_stream_validation_error_raises_validation_error(hub: InferenceClient) -> None:
    with pytest.raises(ValidationError) as caught:
        list(hub.text_generation(PROMPT, max_new_tokens=12, stream=True, temperature=0))
    assert "`temperature` must be strictly positive" in str(caught.value)


# -- raw SSE framing (§2.5, §5.4) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "extra", "full_text"),
    [
        pytest.param(MODEL_PATH, {"stream": True}, True, id="models-route"),
        pytest.param("/", {"stream": True}, True, id="root-route"),
        pytest.param("/generate_stream", {}, False, id="generate_stream"),
    ],
)
def test_sse_framing_byte_by_byte(client: httpx.Client, path: str, extra: dict[str, Any], full_text: bool) -> None:
    r, raw = stream_raw(client, path, {"inputs": PROMPT, "parameters": {"max_new_tokens": 12}, **extra})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    assert b"[DONE]" not in raw
    events = sse_payloads(raw)
    assert 1 <= len(events) <= 12
    # The HF API routes include the prompt by default (return_full_text), /generate_stream does not.
    assert_token_events(events, PROMPT if full_text else "")


def test_generate_stream_return_full_text_prepends_the_prompt(client: httpx.Client) -> None:
    params = {"max_new_tokens": 6, "return_full_text": True}
    r, raw = stream_raw(client, "/generate_stream", {"inputs": PROMPT, "parameters": params})
    assert r.status_code == 200
    assert_token_events(sse_payloads(raw), PROMPT)


def test_stream_details_on_the_last_event_only(client: httpx.Client) -> None:
    r, raw = stream_raw(
        client, "/generate_stream", {"inputs": PROMPT, "parameters": {"max_new_tokens": 5, "details": True}}
    )
    events = sse_payloads(raw)
    assert_token_events(events, "")
    details = events[-1]["details"]
    assert set(details) == {"finish_reason", "generated_tokens", "seed", "input_length"}
    assert details["finish_reason"] == "length"
    assert details["generated_tokens"] == len(events) == 5
    assert details["input_length"] == int(r.headers["x-prompt-tokens"]) > 0


def test_without_stream_the_same_route_answers_the_json_list(client: httpx.Client) -> None:
    """The announcement's literal curl has no `"stream": true`: the plain list comes back (§6 case 11)."""
    body: dict[str, Any] = {"inputs": PROMPT, "parameters": {"max_new_tokens": 8}}
    _, raw = stream_raw(client, MODEL_PATH, {**body, "stream": True})
    streamed = sse_payloads(raw)[-1]["generated_text"]
    for extra in ({}, {"stream": False}):
        r = client.post(MODEL_PATH, json={**body, **extra})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.json() == [{"generated_text": streamed}]


# -- incremental delivery ----------------------------------------------------------------------------------


def test_tokens_are_flushed_as_they_are_made(client: httpx.Client) -> None:
    """~40 tokens take a noticeable time on a CPU; a server that buffers would deliver them all at once."""
    n = 40
    started = time.monotonic()
    arrivals: list[float] = []
    with client.stream(
        "POST", "/generate_stream", json={"inputs": LONG_PROMPT, "parameters": {"max_new_tokens": n}}
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    assert len(arrivals) == n, "greedy, this prompt runs to the limit"
    first, last = arrivals[0] - started, arrivals[-1] - started
    assert last - first > 0
    # The first token comes after one model step; the rest take the other n-1 steps.
    assert first < last / 2, f"first event after {first:.3f} s, last after {last:.3f} s: not streamed"
    assert len({round(t, 3) for t in arrivals}) > n // 4, "events arrived in a few bursts"


# -- errors inside a stream (§6 case 12) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        pytest.param(MODEL_PATH, {"stream": True}, id="models-route"),
        pytest.param("/generate_stream", {}, id="generate_stream"),
    ],
)
def test_validation_error_while_streaming_is_one_error_event(
    client: httpx.Client, path: str, extra: dict[str, Any]
) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 12, "temperature": 0}, **extra}
    r, raw = stream_raw(client, path, body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert sse_payloads(raw) == [
        {"error": "Input validation error: `temperature` must be strictly positive", "error_type": "validation"}
    ]


# -- multi-byte text ---------------------------------------------------------------------------------------


def test_multibyte_characters_are_never_split(client: httpx.Client) -> None:
    """CJK and emoji take several byte-level tokens each: the stream must only ever emit whole characters."""
    body = {"inputs": MULTIBYTE_PROMPT, "parameters": {"max_new_tokens": 80, "details": True}, "stream": True}
    r, raw = stream_raw(client, MODEL_PATH, body)
    assert r.status_code == 200
    events = sse_payloads(raw)  # decodes the body as strict UTF-8
    assert_token_events(events, MULTIBYTE_PROMPT)
    assert events[-1]["details"]["finish_reason"] == "eos_token"
    texts = [e["token"]["text"] for e in events if not e["token"]["special"]]
    assert all("\ufffd" not in t for t in texts), texts
    streamed = "".join(texts)
    assert "你好世界" in streamed
    assert any(ord(ch) >= 0x1F300 for ch in streamed), f"no emoji in {streamed!r}"
    assert "\ufffd" not in events[-1]["generated_text"]
    # The non-stream answer to the same greedy request is the same text.
    plain = client.post(MODEL_PATH, json={"inputs": MULTIBYTE_PROMPT, "parameters": {"max_new_tokens": 80}})
    assert plain.json() == [{"generated_text": events[-1]["generated_text"]}]
