"""Embedding tasks over HTTP: feature-extraction and sentence-similarity (HF task API and pipeline routes) and
OpenAI's `/v1/embeddings`."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from infergate.core.errors import BadRequestError
from infergate.core.tasks import EMBEDDING_TASKS
from infergate.http.body import read_json
from infergate.http.headers import compute_headers
from infergate.http.state import admit, get_state
from infergate.http.streaming import cancel_on_disconnect
from infergate.http.textgen import compute_type, use_cache, wants_to_wait
from infergate.protocols import embeddings as wire

__all__ = ["feature_extraction", "openai_embeddings", "sentence_similarity"]


async def feature_extraction(request: Request, model_id: str | None, body: Any) -> Response:
    ticket = await admit(request, model_id, wants_to_wait(request, body), task="feature-extraction")
    if fields := wire.other_task_fields(body):
        raise BadRequestError(
            f"Model {ticket.spec.id} serves the task {ticket.spec.task!r}; {', '.join(fields)} belong to another "
            f"task. Send a body like {wire.FE_EXAMPLE}, or call a model of that task (GET /v1/models)."
        )
    embed_request, single = wire.parse_feature_extraction(body)
    gateway = get_state(request).gateway
    result = await cancel_on_disconnect(
        request, gateway.embed(ticket, embed_request, use_cache=use_cache(request, body))
    )
    characters = sum(len(t) for t in embed_request.inputs)
    headers = compute_headers(compute_type(ticket), ticket.started, characters, result.tokens)
    return JSONResponse(result.vectors[0] if single else result.vectors, headers=headers)


async def sentence_similarity(request: Request, model_id: str | None, body: Any) -> Response:
    ticket = await admit(request, model_id, wants_to_wait(request, body), task="sentence-similarity")
    source, sentences = wire.parse_similarity(body)
    gateway = get_state(request).gateway
    scores = await cancel_on_disconnect(
        request, gateway.similarity(ticket, source, sentences, use_cache=use_cache(request, body))
    )
    characters = len(source) + sum(len(s) for s in sentences)
    headers = compute_headers(compute_type(ticket), ticket.started, characters, ticket.prompt_tokens)
    return JSONResponse(scores, headers=headers)


async def openai_embeddings(request: Request, path_model: str | None) -> Response:
    body = await read_json(request)
    model, embed_request, encoding = wire.parse_openai_embeddings(body)
    if path_model is None and model is None:  # the first embedding model in the catalog
        model = next((s.id for s in get_state(request).gateway.catalog if s.task in EMBEDDING_TASKS), None)
    ticket = await admit(request, path_model or model, wants_to_wait(request, body), task="feature-extraction")
    gateway = get_state(request).gateway
    result = await cancel_on_disconnect(
        request, gateway.embed(ticket, embed_request, use_cache=use_cache(request, body))
    )
    payload = wire.openai_embeddings_response(result.vectors, ticket.spec.id, result.tokens, encoding)
    characters = sum(len(t) for t in embed_request.inputs)
    headers = compute_headers(compute_type(ticket), ticket.started, characters, result.tokens)
    return JSONResponse(payload, headers=headers)
