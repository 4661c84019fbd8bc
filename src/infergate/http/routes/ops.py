"""Operational routes: health, info, tokenize, model list, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from infergate.core.engine import ModelEngine, ModelLimits, Replicated, TextGenerator
from infergate.core.errors import ValidationError
from infergate.gateway.gateway import Gateway
from infergate.http.body import read_json
from infergate.http.openapi import TOKENS, json_body
from infergate.http.state import admit, get_state
from infergate.observability.metrics import render_metrics
from infergate.protocols.tgi.convert import EXAMPLE
from infergate.protocols.tgi.schemas import TokenizeRequest

__all__ = ["model_list", "router"]

router = APIRouter()


@router.get("/", summary="What this server is and what it serves")
async def root(request: Request) -> Any:
    state = get_state(request)
    if state.pages and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/playground", status_code=303)  # a person in a browser; clients send no text/html
    return {
        "name": "infergate",
        "version": state.version,
        "models": [spec.id for spec in state.gateway.catalog],
        "try": f"POST /models/{state.gateway.catalog.default.id} with {EXAMPLE}",
        "docs": "/docs",
    }


def _health(engine: ModelEngine) -> Response:
    state = engine.state()
    if state.status == "ready":
        return Response(status_code=200)
    message = {
        "loading": "the model is still loading; retry shortly",
        "failed": f"the model failed to load: {state.error}",
    }.get(state.status, f"the model is {state.status}")
    return JSONResponse({"error": "unhealthy", "error_type": "healthcheck", "message": message}, status_code=503)


@router.get("/health", summary="200 once the default model is ready, 503 before")
async def health(request: Request) -> Response:
    return _health(get_state(request).gateway.resolve(None)[1])


@router.get("/models/{model_id:path}/health", summary="200 once this model is ready, 503 before")
async def model_health(model_id: str, request: Request) -> Response:
    return _health(get_state(request).gateway.resolve(model_id)[1])


def _info(request: Request, model_id: str | None) -> dict[str, Any]:
    state = get_state(request)
    spec, engine = state.gateway.resolve(model_id)
    limits = engine.limits() if isinstance(engine, TextGenerator) else ModelLimits(0, 0, 0, 0, 0)
    return {
        "model_id": spec.id,
        "model_sha": None,
        "model_pipeline_tag": spec.task,
        "max_concurrent_requests": 128,
        "max_best_of": limits.max_best_of,
        "max_stop_sequences": limits.max_stop_sequences,
        "max_input_tokens": limits.max_input_tokens,
        "max_total_tokens": limits.max_total_tokens,
        "max_top_n_tokens": limits.max_top_n_tokens,
        "validation_workers": 1,
        "max_client_batch_size": 4,
        "router": "infergate",
        "version": state.version,
        "sha": None,
        "docker_label": None,
    }


@router.get("/info", summary="TGI-style info about the default model")
async def info(request: Request) -> dict[str, Any]:
    return _info(request, None)


@router.get("/models/{model_id:path}/info", summary="TGI-style info about a model")
async def model_info(model_id: str, request: Request) -> dict[str, Any]:
    return _info(request, model_id)


@router.post(
    "/tokenize",
    summary="TGI tokenize: the prompt's tokens with their character offsets",
    openapi_extra=json_body(TokenizeRequest, text_plain=True),
    responses=TOKENS,
)
async def tokenize(request: Request) -> list[dict[str, Any]]:
    body = await read_json(request)
    inputs = body.get("inputs") if isinstance(body, dict) else body
    if not isinstance(inputs, str):
        raise ValidationError(f"`inputs` must be a string. Expected a body like {EXAMPLE}")
    model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else None
    ticket = await admit(request, model, wait=False)
    spans = await ticket.text.tokenize(inputs)
    return [{"id": s.id, "text": s.text, "start": s.start, "stop": s.stop} for s in spans]


def model_list(gateway: Gateway) -> list[dict[str, Any]]:
    """Each catalog model with its task, tiers, state, memory and (remote models) replicas; `GET /v1/models`
    and the admin page show it."""
    data = []
    for spec in gateway.catalog:
        engine = gateway.engines().get(spec.id)
        data.append(
            {
                "id": spec.id,
                "object": "model",
                "created": 0,
                "owned_by": spec.id.split("/")[0],
                "task": spec.task,
                "tiers": list(spec.tiers) if spec.tiers is not None else sorted(gateway.tiers),
                "state": engine.state().status if engine else "unsupported",
                "memory_mb": round(engine.memory_bytes() / 2**20, 1) if engine else 0.0,
                "infill": engine.infill_format() if isinstance(engine, TextGenerator) else None,
                "runner": engine.runner if isinstance(engine, TextGenerator) else None,
            }
        )
        if isinstance(engine, Replicated):
            data[-1]["replicas"] = [
                {"url": r.url, "state": r.state, "in_flight": r.in_flight, "last_error": r.last_error}
                for r in engine.replica_views()
            ]
    return data


@router.get("/v1/models", summary="OpenAI model list")
async def models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": model_list(get_state(request).gateway)}


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    gateway = get_state(request).gateway
    body, content_type = render_metrics(gateway.engines(), gateway.metrics)
    return Response(body, media_type=content_type)
