"""TGI's validation rules (protocol.md §2.3) on every text generation route: 422 with TGI's exact words, a
typed `ValidationError` in the hub client, an error event when streaming, and wrong types named by field."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError

from tests.support.server import MODEL_ID, Server

PROMPT = "Tell me a story"
ROUTES = [f"/models/{MODEL_ID}", "/", "/generate"]
PREFIX = "Input validation error: "

# (parameters, TGI's message). `{max_input}` is the model's max_input_tokens from /info.
RULES = [
    pytest.param({"temperature": 0}, "`temperature` must be strictly positive", id="temperature-0"),
    pytest.param({"temperature": 0.0}, "`temperature` must be strictly positive", id="temperature-0.0"),
    pytest.param({"temperature": -0.5}, "`temperature` must be strictly positive", id="temperature-negative"),
    pytest.param({"repetition_penalty": 0}, "`repetition_penalty` must be strictly positive", id="rep-penalty-0"),
    pytest.param({"repetition_penalty": -1.0}, "`repetition_penalty` must be strictly positive", id="rep-penalty-neg"),
    pytest.param(
        {"frequency_penalty": -2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0", id="freq-penalty-below"
    ),
    pytest.param(
        {"frequency_penalty": 2.01}, "`frequency_penalty` must be >= -2.0 and <= 2.0", id="freq-penalty-above"
    ),
    pytest.param({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0", id="top_p-0"),
    pytest.param({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0", id="top_p-1.0"),
    pytest.param({"top_p": 1.5}, "`top_p` must be > 0.0 and < 1.0", id="top_p-1.5"),
    pytest.param({"top_p": -0.1}, "`top_p` must be > 0.0 and < 1.0", id="top_p-negative"),
    pytest.param({"typical_p": 0.0}, "`typical_p` must be > 0.0 and < 1.0", id="typical_p-0"),
    pytest.param({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0", id="typical_p-1.0"),
    pytest.param({"typical_p": 1.5}, "`typical_p` must be > 0.0 and < 1.0", id="typical_p-1.5"),
    pytest.param({"top_k": 0}, "`top_k` must be strictly positive", id="top_k-0"),
    pytest.param({"top_k": -3}, "`top_k` must be strictly positive", id="top_k-negative"),
    pytest.param({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive", id="max_new_tokens-0"),
    pytest.param({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5", id="stop-5"),
    pytest.param(
        {"stop_sequences": ["a", "b", "c", "d", "e"]},
        "`stop` supports up to 4 stop sequences. Given: 5",
        id="stop_sequences-5",
    ),
    pytest.param({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6", id="top_n_tokens-6"),
    pytest.param({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3", id="best_of-3"),
    pytest.param({"best_of": 2}, "you must use sampling when `best_of` is > 1", id="best_of-greedy"),
    pytest.param(
        {"best_of": 2, "do_sample": False}, "you must use sampling when `best_of` is > 1", id="best_of-do_sample-false"
    ),
    pytest.param(
        {"best_of": 2, "do_sample": True, "seed": 3}, "`seed` must not be set when `best_of` > 1", id="best_of-seed"
    ),
    pytest.param(
        {"truncate": 0}, "`truncate` must be strictly positive and less than {max_input}. Given: 0", id="truncate-0"
    ),
    pytest.param(
        {"truncate": 100_000},
        "`truncate` must be strictly positive and less than {max_input}. Given: 100000",
        id="truncate-too-big",
    ),
    pytest.param(
        {"grammar": {"type": "xml", "value": "<a/>"}},
        'grammar is not valid: unknown type "xml"; use "json", "json_object", "json_schema" or "regex"',
        id="grammar-type",
    ),
    pytest.param(
        {"grammar": {"type": "json", "value": {"type": "nonsense"}}},
        "the json grammar cannot be compiled: Invalid type: nonsense; fix it, or leave out what the message names",
        id="grammar-json",
    ),
]


@pytest.fixture(scope="module")
def limits(server: Server) -> dict[str, Any]:
    info: dict[str, Any] = httpx.get(f"{server.base_url}/info", timeout=30).json()
    return info


@pytest.fixture
def hub(server: Server) -> InferenceClient:
    return InferenceClient(model=server.model_url, timeout=120)


def _assert_validation_error(r: httpx.Response, message: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": PREFIX + message, "error_type": "validation"}


def _sse_events(r: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[len("data:") :]) for line in r.text.splitlines() if line.startswith("data:")]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("parameters", "message"), RULES)
def test_rule_gives_422_with_tgi_message(
    client: httpx.Client, limits: dict[str, Any], route: str, parameters: dict[str, Any], message: str
) -> None:
    r = client.post(route, json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2, **parameters}})
    _assert_validation_error(r, message.format(max_input=limits["max_input_tokens"]))


@pytest.mark.parametrize("route", ROUTES)
def test_empty_inputs(client: httpx.Client, route: str) -> None:
    r = client.post(route, json={"inputs": "", "parameters": {"max_new_tokens": 2}})
    _assert_validation_error(r, "`inputs` cannot be empty")


@pytest.mark.parametrize("route", ROUTES)
def test_watermark_is_refused_not_ignored(client: httpx.Client, route: str) -> None:
    """The server cannot watermark; a parameter it cannot honour is a clear 422, never silently ignored."""
    r = client.post(route, json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "watermark": True}})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error_type"] == "validation"
    assert body["error"].startswith(PREFIX)
    assert "watermark" in body["error"]


def test_watermark_false_is_fine(client: httpx.Client) -> None:
    """Old clients always send `watermark: false`."""
    r = client.post("/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 1, "watermark": False}})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "parameters",
    [
        pytest.param({"frequency_penalty": -2.0}, id="freq-penalty--2"),
        pytest.param({"frequency_penalty": 2.0}, id="freq-penalty-2"),
        pytest.param({"top_p": 0.99}, id="top_p-0.99"),
        pytest.param({"typical_p": 0.5}, id="typical_p-0.5"),
        pytest.param({"top_k": 1}, id="top_k-1"),
        pytest.param({"stop": ["a", "b", "c", "d"]}, id="stop-4"),
        pytest.param({"top_n_tokens": 5, "details": True}, id="top_n_tokens-5"),
        pytest.param({"top_n_tokens": 0}, id="top_n_tokens-0"),
        pytest.param({"best_of": 1, "seed": 3}, id="best_of-1-with-seed"),
        pytest.param({"best_of": 2, "temperature": 0.7}, id="best_of-2-temperature-means-sampling"),
        pytest.param({"truncate": 1}, id="truncate-1"),
        pytest.param({"repetition_penalty": 0.01}, id="rep-penalty-small"),
        pytest.param({"temperature": 0.01}, id="temperature-small"),
    ],
)
def test_values_at_the_edge_are_accepted(client: httpx.Client, parameters: dict[str, Any]) -> None:
    """The rules' boundaries, from the inside: each of these is valid and generates."""
    r = client.post("/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 1, **parameters}})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["generated_text"], str)


def test_truncate_equal_to_max_input_tokens_is_accepted(client: httpx.Client, limits: dict[str, Any]) -> None:
    params = {"max_new_tokens": 1, "truncate": limits["max_input_tokens"]}
    r = client.post("/generate", json={"inputs": PROMPT, "parameters": params})
    assert r.status_code == 200, r.text


# -- prompt length ----------------------------------------------------------------------------------------


def _token_count(client: httpx.Client, text: str) -> int:
    r = client.post("/tokenize", json={"inputs": text})
    assert r.status_code == 200, r.text
    return len(r.json())


@pytest.mark.parametrize("route", ROUTES)
def test_prompt_plus_max_new_tokens_over_the_context(client: httpx.Client, limits: dict[str, Any], route: str) -> None:
    """A prompt that fits by itself but not with the tokens asked for: TGI's message, with the real counts."""
    prompt = "The quick brown fox jumps over the lazy dog. " * 400
    n = _token_count(client, prompt)
    total = limits["max_total_tokens"]
    assert total == 8192
    assert n < limits["max_input_tokens"]
    m = total - n + 1
    r = client.post(route, json={"inputs": prompt, "parameters": {"max_new_tokens": m}})
    _assert_validation_error(
        r, f"`inputs` tokens + `max_new_tokens` must be <= {total}. Given: {n} `inputs` tokens and {m} `max_new_tokens`"
    )


def test_prompt_longer_than_the_context(client: httpx.Client, limits: dict[str, Any]) -> None:
    """TGI checks the total before the input length (validation.rs), so a prompt over the whole context also
    gets the `inputs tokens + max_new_tokens` message."""
    prompt = "The quick brown fox jumps over the lazy dog. " * 1000
    n = _token_count(client, prompt)
    total = limits["max_total_tokens"]
    assert n > total
    r = client.post(f"/models/{MODEL_ID}", json={"inputs": prompt, "parameters": {"max_new_tokens": 5}})
    _assert_validation_error(
        r, f"`inputs` tokens + `max_new_tokens` must be <= {total}. Given: {n} `inputs` tokens and 5 `max_new_tokens`"
    )


def test_over_long_prompt_fits_after_truncate(client: httpx.Client) -> None:
    """`truncate` is how a caller makes a long prompt fit: the same prompt then generates."""
    prompt = "The quick brown fox jumps over the lazy dog. " * 1000
    r = client.post("/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": 2, "truncate": 16}})
    assert r.status_code == 200, r.text
    assert r.headers["x-prompt-tokens"] == "16"


# -- streaming-only rules: TGI reports them inside a 200 event stream (§2.5, §6 case 12) ---------------------

STREAM_RULES = [
    pytest.param(
        {"decoder_input_details": True, "details": True},
        "`decoder_input_details` == true is not supported when streaming tokens",
        id="decoder_input_details",
    ),
    pytest.param(
        {"best_of": 2, "do_sample": True},
        "`best_of` != 1 is not supported when streaming tokens",
        id="best_of",
    ),
]


@pytest.mark.parametrize(
    ("route", "stream_flag"), [(f"/models/{MODEL_ID}", True), ("/", True), ("/generate_stream", None)]
)
@pytest.mark.parametrize(("parameters", "message"), STREAM_RULES)
def test_streaming_only_rule_is_an_error_event(
    client: httpx.Client, route: str, stream_flag: bool | None, parameters: dict[str, Any], message: str
) -> None:
    body: dict[str, Any] = {"inputs": PROMPT, "parameters": {"max_new_tokens": 2, **parameters}}
    if stream_flag is not None:
        body["stream"] = stream_flag
    r = client.post(route, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert _sse_events(r) == [{"error": PREFIX + message, "error_type": "validation"}]


def test_streaming_only_rules_do_not_apply_without_streaming(client: httpx.Client) -> None:
    """The same parameters are fine on a non-streaming call."""
    params = {"max_new_tokens": 2, "decoder_input_details": True, "best_of": 2, "do_sample": True}
    r = client.post("/generate", json={"inputs": PROMPT, "parameters": params})
    assert r.status_code == 200, r.text
    assert r.json()["details"]["prefill"]


@pytest.mark.parametrize(("parameters", "message"), STREAM_RULES)
def test_streaming_rule_raises_validation_error_in_hub_client(
    hub: InferenceClient, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        list(hub.text_generation(PROMPT, max_new_tokens=2, stream=True, **parameters))
    assert message in str(caught.value)


# -- the hub client --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"temperature": 0}, "`temperature` must be strictly positive", id="temperature-0"),
        pytest.param({"top_p": 1.5}, "`top_p` must be > 0.0 and < 1.0", id="top_p-1.5"),
        pytest.param({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4", id="stop-5"),
        pytest.param({"top_n_tokens": 6, "details": True}, "`top_n_tokens` must be >= 0 and <= 5", id="top_n-6"),
        pytest.param({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive", id="max_new_tokens-0"),
    ],
)
def test_hub_client_raises_validation_error(hub: InferenceClient, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        hub.text_generation(PROMPT, **{"max_new_tokens": 2, **kwargs})
    assert message in str(caught.value)


def test_hub_client_on_base_url_raises_validation_error(server: Server) -> None:
    with pytest.raises(ValidationError, match="`temperature` must be strictly positive"):
        InferenceClient(base_url=server.base_url).text_generation(PROMPT, temperature=0, max_new_tokens=2)


# -- wrong types: a 422 that names the field ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"inputs": PROMPT, "parameters": {"temperature": "hot"}}, "temperature", id="temperature-str"),
        pytest.param({"inputs": PROMPT, "parameters": {"max_new_tokens": 1.5}}, "max_new_tokens", id="max-new-float"),
        pytest.param({"inputs": PROMPT, "parameters": {"max_new_tokens": "5"}}, "max_new_tokens", id="max-new-str"),
        pytest.param({"inputs": PROMPT, "parameters": {"do_sample": "yes"}}, "do_sample", id="do_sample-str"),
        pytest.param({"inputs": PROMPT, "parameters": {"top_k": 2.5}}, "top_k", id="top_k-float"),
        pytest.param({"inputs": PROMPT, "parameters": {"stop": "x"}}, "stop", id="stop-str"),
        pytest.param({"inputs": PROMPT, "parameters": {"seed": -1}}, "seed", id="seed-negative"),
        pytest.param({"inputs": PROMPT, "parameters": {"details": "true"}}, "details", id="details-str"),
        pytest.param({"inputs": PROMPT, "parameters": [1, 2]}, "parameters", id="parameters-list"),
        pytest.param({"inputs": [PROMPT]}, "inputs", id="inputs-list"),
        pytest.param({"inputs": 42}, "inputs", id="inputs-number"),
        pytest.param({"inputs": None}, "inputs", id="inputs-null"),
        pytest.param({"inputs": {"text": PROMPT}}, "inputs", id="inputs-dict"),
        pytest.param({"parameters": {"max_new_tokens": 2}}, "inputs", id="inputs-missing"),
    ],
)
@pytest.mark.parametrize("route", ROUTES)
def test_wrong_type_names_the_field(client: httpx.Client, route: str, body: dict[str, Any], field: str) -> None:
    r = client.post(route, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert isinstance(error, str)
    assert re.search(rf"`(parameters\.)?{field}`", error), error
