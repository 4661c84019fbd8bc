"""The served `/openapi.json` tells the truth: it is valid OpenAPI 3.1, and bodies drawn from a route's
documented schema (small ones: a few generated tokens) are answered 200 by the real server, not refused.

Rules a schema cannot state are applied to the drawn bodies by tests/support/openapi_bodies.py's FIXUPS (TGI's
best_of needing sampling, a served `model`, ...). Routes not exercised here: the pipeline tasks and
text-to-image (no such model in the default catalog; tests/unit/test_openapi.py runs their parsers) and
/admin (its models are the parsers)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from tests.support.openapi_bodies import bodies
from tests.support.server import MODEL_ID, Server

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# No shrinking: each step is a request to a shared server, and the first failing body says enough.
EXAMPLES = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,  # the same bodies on every run: a shared suite must not flake
    phases=[Phase.explicit, Phase.generate],
)
# The answers that would mean the schema lied: the body refused (404: a `model` it named is not served). A
# 5xx or a 424 (the engine failed on an accepted body) is a bug too.
REFUSED = {400, 404, 413, 422, 424}

# (route, the component its body is drawn from)
ROUTES = [
    ("/generate", "GenerateRequest"),
    ("/generate_stream", "GenerateRequest"),
    (f"/models/{MODEL_ID}", "GenerateRequest"),
    (f"/models/{EMBEDDING_MODEL}", "FeatureExtractionRequest"),
    (f"/models/{EMBEDDING_MODEL}", "SentenceSimilarityRequest"),
    ("/v1/embeddings", "EmbeddingsRequest"),
    ("/v1/chat/completions", "ChatCompletionRequest"),
    ("/v1/completions", "CompletionRequest"),
    ("/tokenize", "TokenizeRequest"),
]


@pytest.fixture(scope="module")
def openapi(server: Server) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{server.base_url}/openapi.json", timeout=30).json()
    return document


def test_the_served_document_is_valid_openapi_3_1(openapi: dict[str, Any]) -> None:
    validate(openapi)


def _stream_errors(response: httpx.Response) -> list[Any]:
    """The error events of an SSE answer (a stream reports a refused request inside its 200)."""
    events = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    return [e for e in (json.loads(x) for x in events if x != "[DONE]") if isinstance(e, dict) and "error" in e]


@pytest.mark.parametrize(("route", "name"), ROUTES, ids=[f"{r} {n}" for r, n in ROUTES])
def test_bodies_from_the_schema_are_accepted(server: Server, openapi: dict[str, Any], route: str, name: str) -> None:
    schema = openapi["paths"][route.replace(MODEL_ID, "{model_id}").replace(EMBEDDING_MODEL, "{model_id}")]
    assert name in json.dumps(schema["post"]["requestBody"])  # the route documents this body
    headers = {"x-wait-for-model": "true", "authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, timeout=120, headers=headers) as client:

        @EXAMPLES
        @given(data=st.data())
        def check(data: st.DataObject) -> None:
            body = data.draw(bodies(openapi, name, route), label="body")
            response = client.post(route, json=body)
            assert response.status_code not in REFUSED and response.status_code < 500, response.text
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                assert _stream_errors(response) == []

        check()
