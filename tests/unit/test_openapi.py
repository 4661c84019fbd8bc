"""`/openapi.json` tells the truth about request bodies: every body route documents its body, the document is
valid OpenAPI 3.1, and bodies generated from each schema are accepted by the parser that reads that body (the
routes parse by hand; the schemas are documentation, so this is what keeps the two from drifting apart)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from unittest.mock import MagicMock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from infergate.core.engine import ModelLimits
from infergate.core.tasks import ALL_TASKS
from infergate.http.factory import create_app
from infergate.http.openapi import TASK_BODIES
from infergate.http.routes.admin import NewUser, RevokeToken, UserChange
from infergate.http.state import AppState
from infergate.protocols import embeddings, images, pipelines
from infergate.protocols.openai import convert as openai_convert
from infergate.protocols.tgi.convert import parse_generate
from infergate.protocols.wire import parse_wire
from tests.support.openapi_bodies import bodies, refs

# Routes that read no body.
NO_BODY = {("post", "/admin/users/{name}/tokens")}
LIMITS = ModelLimits(max_total_tokens=8192, max_input_tokens=8191)
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    state = AppState(gateway=MagicMock(), store=MagicMock(), max_body_bytes=2_000_000, version="test")
    schema: dict[str, Any] = create_app(state).openapi()
    return json.loads(json.dumps(schema))  # as a client reads it


def test_every_route_that_reads_a_body_documents_it(openapi: dict[str, Any]) -> None:
    seen = 0
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            if method not in ("post", "put", "patch") or (method, path) in NO_BODY:
                continue
            body = operation.get("requestBody")
            assert body is not None, f"{method.upper()} {path} documents no request body"
            assert body["required"] is True
            assert refs(body["content"]["application/json"]["schema"]), f"{method.upper()} {path}"
            seen += 1
    assert seen >= 15


def test_every_reference_resolves(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    for ref in refs(openapi):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref
    assert "HTTPValidationError" not in components  # FastAPI's 422, which this server never sends


def test_the_document_is_valid_openapi_3_1(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"].startswith("3.1")
    validate(openapi)


@pytest.mark.parametrize("path", ["/models/{model_id}", "/pipeline/{task}/{model_id}"])
def test_task_routes_take_any_task_body_and_say_what_decides(openapi: dict[str, Any], path: str) -> None:
    body = openapi["paths"][path]["post"]["requestBody"]
    branches = {ref.rsplit("/", 1)[1] for ref in refs(body["content"]["application/json"]["schema"])}
    assert branches == {model.__name__ for model in TASK_BODIES.values()}
    assert "task" in body["description"]
    assert "text/plain" in body["content"]  # the legacy raw-string body


def test_every_task_has_a_body() -> None:
    assert set(TASK_BODIES) == ALL_TASKS


def test_seq2seq_generate_parameters_match_the_parser() -> None:
    documented = set(pipelines.Seq2SeqGenerateParameters.model_fields)
    assert documented == set(pipelines._GENERATE)
    assert documented <= set(pipelines.Seq2SeqParameters.model_fields)


def _pipeline(task: str) -> Callable[[Any], Any]:
    return lambda body: pipelines.parse(task, body)


def _feature_extraction(body: Any) -> Any:
    assert embeddings.other_task_fields(body) == []
    return embeddings.parse_feature_extraction(body)


# component -> the parser the server reads that body with
PARSERS: dict[str, Callable[[Any], Any]] = {
    "GenerateRequest": lambda body: parse_generate(body, stream=None, full_text_default=True, limits=LIMITS),
    "FeatureExtractionRequest": _feature_extraction,
    "SentenceSimilarityRequest": embeddings.parse_similarity,
    "EmbeddingsRequest": embeddings.parse_openai_embeddings,
    "TextToImageRequest": lambda body: images.parse_text_to_image(body, None),
    "ChatCompletionRequest": lambda body: openai_convert.parse_chat(body, LIMITS),
    "CompletionRequest": lambda body: openai_convert.parse_completion(body, LIMITS),
    "NewUser": lambda body: parse_wire(NewUser, body, ""),
    "UserChange": lambda body: parse_wire(UserChange, body, ""),
    "RevokeToken": lambda body: parse_wire(RevokeToken, body, ""),
    **{model.__name__: _pipeline(task) for task, model in pipelines.REQUESTS.items()},
}


def test_every_component_body_has_a_parser_here(openapi: dict[str, Any]) -> None:
    documented = {
        ref.rsplit("/", 1)[1]
        for operations in openapi["paths"].values()
        for operation in operations.values()
        for ref in refs(operation.get("requestBody", {}).get("content", {}).get("application/json", {}))
    }
    assert documented - set(PARSERS) == {"TokenizeRequest"}  # read in a route: tests/e2e/test_openapi.py


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_bodies_from_the_schema_are_accepted(openapi: dict[str, Any], name: str) -> None:
    parser = PARSERS[name]

    @EXAMPLES
    @given(body=st.data())
    def check(body: st.DataObject) -> None:
        drawn = body.draw(bodies(openapi, name))
        parser(json.loads(json.dumps(drawn)))  # raises the server's 400/422 error if refused

    check()
