"""Bad requests: each gets a JSON error that says what to fix, with the right status, and none of them
produces a 500 or stops the engine (the server answers a good request afterwards)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError, TextGenerationError

from tests.support.server import MODEL_ID, Server

LIMIT = 2_000_000  # TGI's default payload limit, the server's default max_body_bytes
JSON_ROUTES = [f"/models/{MODEL_ID}", "/", "/generate", "/generate_stream", "/tokenize", "/v1/chat/completions"]
UNKNOWN_ID = "nobody/no-such-model"

# Every status any test in this module saw: no request may ever come back 5xx.
STATUSES: list[tuple[str, str, int]] = []


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    """A client that records every response in STATUSES (checked by the last test of this module)."""

    def record(response: httpx.Response) -> None:
        STATUSES.append((response.request.method, response.request.url.path, response.status_code))

    with httpx.Client(base_url=server.base_url, timeout=120, event_hooks={"response": [record]}) as c:
        yield c


def _json_error(r: httpx.Response, status: int) -> str:
    """The response is `status` with a JSON error body; return the message. OpenAI routes use OpenAI's shape
    `{"error": {"message", "type", "param", "code"}}` (the openai SDK shows only the message); the others
    `{"error": "..."}`."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, dict)
    if "/v1/" in r.request.url.path:
        assert isinstance(body["error"], dict) and set(body["error"]) == {"message", "type", "param", "code"}
        assert isinstance(body["error"]["type"], str)
        message = body["error"]["message"]
    else:
        message = body["error"]
    assert isinstance(message, str) and message
    return message


def _post_raw(http: httpx.Client, path: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    return http.post(path, content=content, headers={"content-type": content_type})


# -- malformed bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"inputs": "hi"', id="unterminated"),
        pytest.param(b"{inputs: 'hi'}", id="not-json-quotes"),
        pytest.param(b'{"inputs": "hi",}', id="trailing-comma"),
        pytest.param(b"inputs=hi", id="form-encoded"),
        pytest.param(b'{"inputs": "\xff\xfe"}', id="invalid-utf8"),
    ],
)
def test_malformed_json_is_400_saying_json(http: httpx.Client, path: str, content: bytes) -> None:
    message = _json_error(_post_raw(http, path, content), 400)
    assert "JSON" in message


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"inputs": "hi", "parameters": {"temperature": NaN, "max_new_tokens": 2}}', id="nan-temp"),
        pytest.param(b'{"inputs": "hi", "parameters": {"temperature": Infinity, "max_new_tokens": 2}}', id="inf"),
        pytest.param(b'{"inputs": "hi", "parameters": {"repetition_penalty": NaN, "max_new_tokens": 2}}', id="nan-rp"),
    ],
)
def test_nan_and_infinity_are_not_json(http: httpx.Client, content: bytes) -> None:
    """NaN/Infinity are not JSON (RFC 8259): TGI's parser refuses them, they must not reach the sampler."""
    message = _json_error(_post_raw(http, f"/models/{MODEL_ID}", content), 400)
    assert "JSON" in message


def test_deeply_nested_json_is_400_not_500(http: httpx.Client) -> None:
    """A small body (100 KB) nested 100,000 deep: the parser's recursion limit must not become a 500."""
    message = _json_error(_post_raw(http, f"/models/{MODEL_ID}", b"[" * 100_000), 400)
    assert "JSON" in message


@pytest.mark.parametrize("path", [f"/models/{MODEL_ID}", "/generate", "/tokenize"])
def test_inputs_that_are_not_valid_text_are_a_client_error(http: httpx.Client, path: str) -> None:
    """A lone UTF-16 surrogate (`\\ud800`) parses as JSON but is not text: the client's fault, not a 500."""
    r = _post_raw(http, path, b'{"inputs": "abc \\ud800 def", "parameters": {"max_new_tokens": 2}}')
    assert r.status_code in (400, 422), r.text
    assert "inputs" in r.json()["error"]


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("content", [b"", b"   \n"], ids=["empty", "whitespace"])
def test_empty_body_is_400(http: httpx.Client, path: str, content: bytes) -> None:
    message = _json_error(_post_raw(http, path, content), 400)
    assert "empty" in message


@pytest.mark.parametrize("path", [f"/models/{MODEL_ID}", "/", "/generate", "/generate_stream"])
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'[{"inputs": "hi"}]', id="array"),
        pytest.param(b"42", id="number"),
        pytest.param(b"true", id="bool"),
        pytest.param(b"null", id="null"),
    ],
)
def test_json_that_is_not_an_object_is_400(http: httpx.Client, path: str, content: bytes) -> None:
    message = _json_error(_post_raw(http, path, content), 400)
    assert "JSON object" in message


def test_raw_string_body_is_the_legacy_inputs(http: httpx.Client) -> None:
    """The legacy API took a bare text/plain body as the inputs; not an error."""
    r = _post_raw(http, f"/models/{MODEL_ID}", b"Hello there", content_type="text/plain")
    assert r.status_code == 200, r.text
    assert r.json()[0]["generated_text"].startswith("Hello there")


# -- unknown models and routes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "model"),
    [
        ("POST", f"/models/{UNKNOWN_ID}", UNKNOWN_ID),
        ("POST", f"/models/{UNKNOWN_ID}/v1/chat/completions", UNKNOWN_ID),
        ("GET", f"/models/{UNKNOWN_ID}/health", UNKNOWN_ID),
        ("GET", f"/models/{UNKNOWN_ID}/info", UNKNOWN_ID),
        ("POST", "/models/gpt2", "gpt2"),
    ],
)
def test_unknown_model_is_404_naming_it(http: httpx.Client, method: str, path: str, model: str) -> None:
    body = {"inputs": "hi", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    r = http.request(method, path, json=body if method == "POST" else None)
    message = _json_error(r, 404)
    assert model in message
    assert MODEL_ID in message, "the error lists the models that are served"


def test_unknown_model_in_openai_body_is_404_naming_it(http: httpx.Client) -> None:
    body = {"model": UNKNOWN_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    message = _json_error(http.post("/v1/chat/completions", json=body), 404)
    assert UNKNOWN_ID in message


def test_unknown_model_via_hub_client(server: Server) -> None:
    """The hub client raises (an HfHubHTTPError, or a typed TextGenerationError since the body has an
    `error_type`) with the server's message, which names the model."""
    client = InferenceClient(model=f"{server.base_url}/models/{UNKNOWN_ID}")
    with pytest.raises((HfHubHTTPError, TextGenerationError)) as caught:
        client.text_generation("hi", max_new_tokens=2)
    assert UNKNOWN_ID in str(caught.value)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/v2/generate"), ("GET", "/v1/nothing/here"), ("DELETE", "/pipeline-x")],
)
def test_unknown_route_is_404_json(http: httpx.Client, method: str, path: str) -> None:
    message = _json_error(http.request(method, path), 404)
    assert path in message


def test_wrong_method_is_405_json(http: httpx.Client) -> None:
    message = _json_error(http.get("/generate"), 405)
    assert "GET" in message


# -- body size -------------------------------------------------------------------------------------------


def _padded_body(size: int) -> bytes:
    """A valid generation request of exactly `size` bytes (an unknown key carries the padding)."""
    head = b'{"inputs": "Hi", "parameters": {"max_new_tokens": 1}, "pad": "'
    tail = b'"}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    json.loads(body)
    return body


def test_body_over_the_limit_with_content_length_is_413(http: httpx.Client) -> None:
    r = _post_raw(http, f"/models/{MODEL_ID}", _padded_body(LIMIT + 1))
    message = _json_error(r, 413)
    assert str(LIMIT) in message


def test_large_body_over_the_limit_is_413(http: httpx.Client) -> None:
    r = _post_raw(http, "/generate", _padded_body(5 * LIMIT))
    _json_error(r, 413)


def test_chunked_body_over_the_limit_is_413(http: httpx.Client) -> None:
    """No Content-Length (a generator body is sent chunked): the server must count what arrives."""
    body = _padded_body(LIMIT + 100_000)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    request = http.build_request(
        "POST", f"/models/{MODEL_ID}", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    message = _json_error(http.send(request), 413)
    assert str(LIMIT) in message


def test_body_at_the_limit_is_accepted(http: httpx.Client) -> None:
    r = _post_raw(http, f"/models/{MODEL_ID}", _padded_body(LIMIT))
    assert r.status_code == 200, r.text
    assert r.json()[0]["generated_text"].startswith("Hi")


def test_chunked_body_under_the_limit_is_accepted(http: httpx.Client) -> None:
    body = json.dumps({"inputs": "Hi", "parameters": {"max_new_tokens": 1}}).encode()

    def chunks() -> Iterator[bytes]:
        yield body[:5]
        yield body[5:]

    r = http.post("/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


# -- the server survives all of it -----------------------------------------------------------------------


def test_server_still_answers_after_bad_requests(http: httpx.Client, server: Server) -> None:
    """Run after the tests above (file order): a fresh round of bad requests, then good ones still work."""
    bad = [
        (f"/models/{MODEL_ID}", b"{not json"),
        ("/generate", b""),
        ("/", b"[1, 2]"),
        (f"/models/{UNKNOWN_ID}", b'{"inputs": "hi"}'),
        ("/generate", b'{"inputs": "hi", "parameters": {"temperature": 0}}'),
        ("/generate", b'{"inputs": 5}'),
    ]
    for path, content in bad:
        assert 400 <= _post_raw(http, path, content).status_code < 500
    assert http.get("/health").status_code == 200
    prompt = "The capital of France is"
    r = http.post(f"/models/{MODEL_ID}", json={"inputs": prompt, "parameters": {"max_new_tokens": 3}})
    assert r.status_code == 200, r.text
    assert r.json()[0]["generated_text"].startswith(prompt)
    out = InferenceClient(model=server.model_url).text_generation("Hello", max_new_tokens=2)
    assert isinstance(out, str) and out
    assert server.process.poll() is None, "the server process is still running"


def test_no_request_in_this_module_got_a_5xx() -> None:
    """Nothing a client sends produces a 500: checked over every response the tests above received."""
    assert STATUSES, "run with the rest of this module"
    server_errors = sorted({s for s in STATUSES if s[2] >= 500})
    assert not server_errors, f"5xx answers: {server_errors}"
