"""`POST /models/{id}` and the pipeline routes: each request goes to the handler of the task it is for (the
route's task, else the model's own; an embedding model takes sentence-similarity by the body's shape)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from infergate.core.errors import BadRequestError
from infergate.core.tasks import ALL_TASKS, TEXT_GENERATION, TEXT_TO_IMAGE
from infergate.http.body import read_json
from infergate.http.embeddings import feature_extraction, sentence_similarity
from infergate.http.headers import compute_headers
from infergate.http.state import admit, get_state
from infergate.http.streaming import cancel_on_disconnect
from infergate.http.textgen import compute_type, text_generation, use_cache, wants_to_wait
from infergate.protocols import embeddings as embedding_wire
from infergate.protocols import images as image_wire
from infergate.protocols import pipelines as pipeline_wire

__all__ = ["task_request"]


async def task_request(request: Request, model_id: str | None, task: str | None) -> Response:
    if task is not None and task not in ALL_TASKS:
        raise BadRequestError(
            f"The task `{task}` is not recognized by this server; it serves {', '.join(sorted(ALL_TASKS))}. "
            "Use one of those in the /pipeline/{task}/{model_id} route."
        )
    if task is None:
        task = get_state(request).gateway.task_of(model_id)
    if task in (None, TEXT_GENERATION):  # an unknown model gets its 404 there
        return await text_generation(request, model_id, force_stream=None, wrap_list=True, full_text_default=True)
    body = await read_json(request)  # parsed once, here, for every other task
    if task == "feature-extraction" and embedding_wire.is_similarity_body(body):
        task = "sentence-similarity"  # an embedding model takes both, by the body's shape
    if task == "feature-extraction":
        return await feature_extraction(request, model_id, body)
    if task == "sentence-similarity":
        return await sentence_similarity(request, model_id, body)
    if task == TEXT_TO_IMAGE:
        return await _text_to_image(request, model_id, body)
    return await _pipeline(request, model_id, task, body)


async def _pipeline(request: Request, model_id: str | None, task: str, body: Any) -> Response:
    ticket = await admit(request, model_id, wants_to_wait(request, body), task=task)
    inputs, parameters = pipeline_wire.parse(task, body)
    gateway = get_state(request).gateway
    output = await cancel_on_disconnect(
        request, gateway.run_pipeline(ticket, inputs, parameters, use_cache=use_cache(request, body))
    )
    characters = len(inputs) if isinstance(inputs, str) else sum(len(v) for v in inputs.values())
    headers = compute_headers(compute_type(ticket), ticket.started, characters)
    return JSONResponse(pipeline_wire.render(task, output), headers=headers)


async def _text_to_image(request: Request, model_id: str | None, body: Any) -> Response:
    ticket = await admit(request, model_id, wants_to_wait(request, body), task=TEXT_TO_IMAGE)
    image_request = image_wire.parse_text_to_image(body, request.headers.get("accept"))
    gateway = get_state(request).gateway
    image, seed = await cancel_on_disconnect(
        request, gateway.text_to_image(ticket, image_request, use_cache=use_cache(request, body))
    )
    headers = compute_headers(compute_type(ticket), ticket.started, len(image_request.prompt))
    headers |= {"x-compute-images": "1", "x-seed": str(seed)}
    return Response(image, media_type=image_wire.MEDIA_TYPES[image_request.format], headers=headers)
