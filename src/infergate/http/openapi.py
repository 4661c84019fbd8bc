"""What `/openapi.json` says about request bodies.

The routes read their bodies themselves (`http/body.py`: the text/plain legacy body, TGI's strict types, this
server's error messages), so FastAPI sees no body parameter. Each route instead declares its documented body
with ``openapi_extra=json_body(...)``: the protocol's pydantic model, referenced from `components/schemas`.
``install`` makes `app.openapi()` add those schemas (and the models they use) to the components, and replaces
FastAPI's 422 answer for path parameters (which this server never sends) with this server's error body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from infergate.core.tasks import TEXT_GENERATION, TEXT_TO_IMAGE
from infergate.protocols import embeddings, images, pipelines
from infergate.protocols.images import MEDIA_TYPES
from infergate.protocols.tgi.schemas import GenerateRequest

__all__ = [
    "ERROR_RESPONSES",
    "GENERATED",
    "STREAM",
    "TASK_ANSWER",
    "TASK_BODIES",
    "TOKENS",
    "install",
    "json_body",
    "task_body",
]

_REF = "#/components/schemas/{model}"
_COMPONENTS: dict[str, dict[str, Any]] = {}  # filled as the route modules declare their bodies

# The body of each task on `POST /models/{id}` and the pipeline routes.
TASK_BODIES: dict[str, type[BaseModel]] = {
    TEXT_GENERATION: GenerateRequest,
    "feature-extraction": embeddings.FeatureExtractionRequest,
    "sentence-similarity": embeddings.SentenceSimilarityRequest,
    TEXT_TO_IMAGE: images.TextToImageRequest,
    **pipelines.REQUESTS,
}

_ERROR = {
    "type": "object",
    "properties": {
        "error": {"description": "what was wrong and how to fix it (on /v1/ routes: OpenAI's error object)"},
        "error_type": {"type": "string", "description": "TGI's kind: validation, generation, overloaded, ..."},
    },
    "required": ["error"],
}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": _ERROR_CONTENT}
    for status, description in (
        (400, "the body is not JSON, or is meant for another task"),
        (422, "a field has a wrong type or value"),
    )
}
_COMPONENTS["Error"] = _ERROR

# The answers, where their shape is short to state.
_SSE = {"text/event-stream": {"schema": {"type": "string", "description": "Server-Sent Events, `data: {json}`"}}}
_GENERATED_TEXT = {
    "type": "object",
    "properties": {"generated_text": {"type": "string"}, "details": {"type": ["object", "null"]}},
    "required": ["generated_text"],
}
GENERATED: dict[int | str, dict[str, Any]] = {
    200: {"description": "the generated text", "content": {"application/json": {"schema": _GENERATED_TEXT}}}
}
STREAM: dict[int | str, dict[str, Any]] = {200: {"description": "one event per token", "content": _SSE}}
TASK_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the task's answer: `[{generated_text}]` for text-generation (events with `stream`), a "
        "vector or a list of them for feature-extraction, scores for sentence-similarity, image bytes for "
        "text-to-image, the transformers pipeline's answer for the other tasks",
        "content": {
            "application/json": {"schema": {}},
            **_SSE,
            **{media: {"schema": {"type": "string", "contentMediaType": media}} for media in MEDIA_TYPES.values()},
        },
    }
}
TOKENS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the prompt's tokens with their character offsets",
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "text": {"type": "string"},
                            "start": {"type": "integer"},
                            "stop": {"type": "integer"},
                        },
                    },
                }
            }
        },
    }
}

_TEXT_PLAIN = {
    "text/plain": {
        "schema": {"type": "string", "description": "the legacy form: the whole body is `inputs`"},
    }
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    """Register ``model``'s schema (and those it uses) as components; return a reference to it."""
    schema = model.model_json_schema(ref_template=_REF)
    found = {**schema.pop("$defs", {}), model.__name__: schema}
    for name, component in found.items():
        if _COMPONENTS.setdefault(name, component) != component:
            raise ValueError(f"two different request models are named {name}; rename one")
    return {"$ref": _REF.format(model=model.__name__)}


def json_body(model: type[BaseModel], *, text_plain: bool = False, description: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body is ``model`` (as JSON, and as a raw string with text_plain)."""
    return _request_body(_ref(model), text_plain, description)


def task_body(description: str) -> dict[str, Any]:
    """``openapi_extra`` for the routes whose body depends on a task: any of the task bodies."""
    refs: list[dict[str, Any]] = []
    for model in TASK_BODIES.values():
        if (ref := _ref(model)) not in refs:
            refs.append(ref)
    return _request_body({"anyOf": refs}, True, description)


def _request_body(schema: dict[str, Any], text_plain: bool, description: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": schema}, **(_TEXT_PLAIN if text_plain else {})},
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the request body components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            _use_error_body(schema)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_COMPONENTS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _use_error_body(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 `HTTPValidationError` for any path parameter; this server answers its own
    errors instead (the path parameters are plain strings, never refused by FastAPI)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                responses["422"] = ERROR_RESPONSES[422]
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    if "components" in schema and not components:
        schema["components"].pop("schemas")
