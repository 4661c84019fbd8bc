"""OpenAI-compatible chat and completions (protocol.md §4, §6 cases 13-15), called with the `openai` SDK, the hub
client's `chat_completion`, and raw httpx for the SSE framing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient

from tests.support.server import MODEL_ID, Server

FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
# What SmolLM2's chat template makes of FRANCE (its default system prompt included): usage must count these tokens.
CHATML_FRANCE = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n"
)
POEM = [{"role": "user", "content": "Write a long poem about the sea."}]
COMPLETION_PROMPT = "The three primary colors are"


@pytest.fixture
def oai(server: Server) -> Iterator[openai.OpenAI]:
    # x-use-cache: 0 so that repeated calls (determinism, seeds) really run, should a result cache answer them.
    headers = {"x-use-cache": "0"}
    with openai.OpenAI(
        base_url=f"{server.base_url}/v1", api_key=server.token, max_retries=0, timeout=120, default_headers=headers
    ) as c:
        yield c


def sse_events(raw: bytes) -> list[str]:
    """The data of each event, asserting `data: ...\\n\\n` framing (with the space) for every one."""
    assert raw.endswith(b"\n\n"), raw[-200:]
    events = raw.decode("utf-8")[: -len("\n\n")].split("\n\n")
    for event in events:
        assert event.startswith("data: "), f"bad event framing: {event[:120]!r}"
        assert "\n" not in event, f"an event is one `data:` line: {event[:120]!r}"
    return [event[len("data: ") :] for event in events]


def chat_greedy(oai: openai.OpenAI, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    out = oai.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0, **kwargs)
    content = out.choices[0].message.content
    assert isinstance(content, str)
    return content


# -- chat, non-streaming -----------------------------------------------------------------------------------


def test_chat_answers_with_content_usage_and_finish_reason(oai: openai.OpenAI, client: httpx.Client) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=MODEL_ID, messages=FRANCE, max_tokens=12, temperature=0)
    out = raw.parse()
    assert out.object == "chat.completion"
    assert out.model == MODEL_ID
    assert len(out.choices) == 1
    choice = out.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content is not None and "Paris" in choice.message.content
    assert choice.finish_reason == "stop", "the model ends its answer with EOS before 12 tokens"
    # The same prompt, templated by hand and sent to TGI's /generate, gives the same answer and token counts.
    generated = client.post(
        "/generate", json={"inputs": CHATML_FRANCE, "parameters": {"max_new_tokens": 12, "details": True}}
    ).json()
    assert choice.message.content == generated["generated_text"]
    usage = out.usage
    assert usage is not None
    assert usage.prompt_tokens == len(client.post("/tokenize", json={"inputs": CHATML_FRANCE}).json())
    assert usage.completion_tokens == generated["details"]["generated_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert raw.headers["x-prompt-tokens"] == str(usage.prompt_tokens)
    assert raw.headers["x-generated-tokens"] == str(usage.completion_tokens)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_is_honoured(oai: openai.OpenAI, field: str) -> None:
    out = oai.chat.completions.create(model=MODEL_ID, messages=POEM, temperature=0, **{field: 3})
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 3
    assert out.choices[0].message.content


def test_temperature_zero_is_greedy_and_deterministic(oai: openai.OpenAI) -> None:
    first = chat_greedy(oai, POEM, max_tokens=12)
    assert first
    assert chat_greedy(oai, POEM, max_tokens=12) == first


def test_seed_makes_sampling_reproducible(oai: openai.OpenAI) -> None:
    def sample(seed: int) -> str | None:
        out = oai.chat.completions.create(model=MODEL_ID, messages=POEM, max_tokens=12, temperature=1.0, seed=seed)
        return out.choices[0].message.content

    first = sample(1234)
    assert sample(1234) == first
    # The seed matters: if it were ignored (or sampling were greedy), every seed would give the same text.
    assert len({first, sample(1), sample(2)}) > 1


@pytest.mark.parametrize("stop", [" Paris", "aris"], ids=["whole-token", "mid-token"])
def test_stop_is_left_out_of_the_content(oai: openai.OpenAI, stop: str) -> None:
    """OpenAI semantics: the text ends just before the stop sequence, streaming or not."""
    full = chat_greedy(oai, FRANCE, max_tokens=12)
    assert stop in full
    expected = full[: full.index(stop)]
    out = oai.chat.completions.create(model=MODEL_ID, messages=FRANCE, max_tokens=12, temperature=0, stop=[stop])
    assert out.choices[0].message.content == expected
    assert out.choices[0].finish_reason == "stop"
    chunks = list(
        oai.chat.completions.create(
            model=MODEL_ID, messages=FRANCE, max_tokens=12, temperature=0, stop=[stop], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_n_gives_several_choices(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(
        model=MODEL_ID, messages=POEM, max_tokens=6, n=2, temperature=1.0, seed=7, logprobs=True
    )
    assert [c.index for c in out.choices] == [0, 1]
    contents = [c.message.content for c in out.choices]
    assert all(contents)
    assert contents[0] != contents[1], "two sampled choices with the same seed are the same"
    assert out.usage is not None
    tokens = [len(c.logprobs.content or []) for c in out.choices if c.logprobs is not None]
    assert len(tokens) == 2 and all(1 <= t <= 6 for t in tokens)
    assert out.usage.completion_tokens == sum(tokens)


def test_logprobs_and_top_logprobs(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(
        model=MODEL_ID, messages=POEM, max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = out.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert len(entries) == 4
    for entry in entries:
        assert entry.logprob <= 0.0
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3
        top = [t.logprob for t in entry.top_logprobs]
        assert top == sorted(top, reverse=True), "most likely first"
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)
    assert "".join(e.token for e in entries) == choice.message.content


# -- chat, streaming (§6 cases 14, 15) ---------------------------------------------------------------------


def test_chat_stream_gives_delta_chunks(oai: openai.OpenAI) -> None:
    expected = chat_greedy(oai, FRANCE, max_tokens=12)
    chunks = list(
        oai.chat.completions.create(model=MODEL_ID, messages=FRANCE, max_tokens=12, temperature=0, stream=True)
    )
    assert len(chunks) > 1
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1, "one id for the whole stream"
    assert all(c.model == MODEL_ID for c in chunks)
    assert all(len(c.choices) == 1 and c.choices[0].delta.role == "assistant" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "no usage unless asked"


def test_chat_stream_raw_framing_ends_with_done(client: httpx.Client) -> None:
    body = {"model": MODEL_ID, "messages": FRANCE, "max_tokens": 12, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        raw = r.read()
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = sse_events(raw)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    for data in events[:-1]:
        chunk = json.loads(data)
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["choices"][0]["delta"]["role"] == "assistant"
    assert "Paris" in "".join(json.loads(d)["choices"][0]["delta"]["content"] for d in events[:-1])


def test_stream_options_include_usage_adds_a_final_usage_chunk(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model=MODEL_ID, messages=FRANCE, max_tokens=12, temperature=0)
    chunks = list(
        oai.chat.completions.create(
            model=MODEL_ID,
            messages=FRANCE,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and plain.usage is not None
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None and c.choices for c in chunks[:-1])


# -- completions -------------------------------------------------------------------------------------------


def completion_greedy(oai: openai.OpenAI, prompt: str) -> str:
    return oai.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=6, temperature=0).choices[0].text


def test_completion_with_a_string_prompt(oai: openai.OpenAI, client: httpx.Client) -> None:
    out = oai.completions.create(model=MODEL_ID, prompt=COMPLETION_PROMPT, max_tokens=6, temperature=0)
    assert out.object == "text_completion"
    assert out.model == MODEL_ID
    assert len(out.choices) == 1
    assert out.choices[0].finish_reason == "length"
    # Greedy: the same continuation as TGI's /generate.
    generated = client.post("/generate", json={"inputs": COMPLETION_PROMPT, "parameters": {"max_new_tokens": 6}})
    assert out.choices[0].text == generated.json()["generated_text"]
    assert out.usage is not None
    assert out.usage.prompt_tokens == len(client.post("/tokenize", json={"inputs": COMPLETION_PROMPT}).json())
    assert out.usage.completion_tokens == 6


def test_completion_with_a_list_of_two_prompts(oai: openai.OpenAI) -> None:
    prompts = [COMPLETION_PROMPT, "One, two, three,"]
    out = oai.completions.create(model=MODEL_ID, prompt=prompts, max_tokens=6, temperature=0)
    assert [c.index for c in out.choices] == [0, 1]
    assert [c.text for c in out.choices] == [completion_greedy(oai, p) for p in prompts], "answers never mix"
    assert out.usage is not None and out.usage.completion_tokens == 12


def test_completion_stream(oai: openai.OpenAI, client: httpx.Client) -> None:
    expected = completion_greedy(oai, COMPLETION_PROMPT)
    chunks = list(
        oai.completions.create(model=MODEL_ID, prompt=COMPLETION_PROMPT, max_tokens=6, temperature=0, stream=True)
    )
    assert {c.object for c in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "length"
    body = {"model": MODEL_ID, "prompt": COMPLETION_PROMPT, "max_tokens": 6, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        raw = r.read()
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1


def test_models_list_contains_the_model(oai: openai.OpenAI) -> None:
    assert MODEL_ID in [m.id for m in oai.models.list()]


# -- the hub client's chat_completion (§6 cases 13, 14) ----------------------------------------------------


def test_hub_chat_completion_on_the_model_url(server: Server) -> None:
    """Posts to `/models/{id}/v1/chat/completions` with `"model": "dummy"`; the answer names the real model."""
    hub = InferenceClient(model=server.model_url, timeout=120)
    out = hub.chat_completion(FRANCE, max_tokens=12, temperature=0)
    assert out.choices[0].message.content is not None and "Paris" in out.choices[0].message.content
    assert out.model == MODEL_ID
    assert out.usage is not None and out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0
    assert f'"POST /models/{MODEL_ID}/v1/chat/completions HTTP/1.1" 200' in server.log()


def test_model_chat_route_accepts_the_dummy_model_name(client: httpx.Client) -> None:
    body = {"model": "dummy", "messages": FRANCE, "max_tokens": 12, "temperature": 0, "stream": False}
    r = client.post(f"/models/{MODEL_ID}/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == MODEL_ID
    assert "Paris" in r.json()["choices"][0]["message"]["content"]


def test_hub_chat_completion_stream_on_the_base_url(server: Server, oai: openai.OpenAI) -> None:
    hub = InferenceClient(base_url=server.base_url, timeout=120)
    chunks = list(hub.chat_completion(FRANCE, max_tokens=12, temperature=0, stream=True))
    assert chunks, "the client yields nothing when the stream is not understood"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat_greedy(oai, FRANCE, max_tokens=12)
    assert "Paris" in text


# -- errors ------------------------------------------------------------------------------------------------


def assert_shows(exc: openai.APIStatusError, *words: str) -> None:
    """The server said it (in the body), and the SDK shows it to the user: the `openai` SDK puts only the body's
    `error.message` (OpenAI's error shape) into the exception's text, so a flat `{"error": "..."}` reads just
    "Error code: 422"."""
    for word in words:
        assert word in exc.response.text, exc.response.text
    for word in words:
        assert word in str(exc), f"the openai SDK shows only {str(exc)!r}; body: {exc.response.text}"


def test_temperature_out_of_range_is_a_client_error(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:  # OpenAI's 400, not TGI's 422
        oai.chat.completions.create(model=MODEL_ID, messages=FRANCE, max_tokens=3, temperature=3.0)
    assert caught.value.status_code == 400
    assert_shows(caught.value, "temperature")


def test_unknown_model_is_not_found(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="nobody/no-such-model", messages=FRANCE, max_tokens=3)
    assert_shows(caught.value, "nobody/no-such-model")


def test_empty_messages_is_a_client_error(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model=MODEL_ID, messages=[], max_tokens=3)
    assert 400 <= caught.value.status_code < 500
    assert_shows(caught.value, "messages")


def test_a_required_tool_is_called(oai: openai.OpenAI) -> None:
    """Tools are answered (tests/e2e/test_structured.py has the rest): a required call of the one tool."""
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    }
    out = oai.chat.completions.create(
        model=MODEL_ID,
        messages=FRANCE,
        max_tokens=40,
        temperature=0,
        tools=[tool],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assert out.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in out.choices[0].message.tool_calls or []] == ["get_weather"]
