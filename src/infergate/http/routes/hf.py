"""The HF task API (`POST /`, `POST /models/{id}`, the pipeline routes) and TGI's `/generate` and `/generate_stream`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from infergate.http.tasks import task_request
from infergate.http.textgen import text_generation

__all__ = ["router"]

router = APIRouter()


# The HF API and TGI's `/` answer a list and include the prompt by default (the announcement's behaviour).
@router.post("/", summary="HF Inference API on the default model")
async def compat(request: Request) -> Response:
    return await text_generation(request, None, force_stream=None, wrap_list=True, full_text_default=True)


@router.post("/generate", summary="TGI generate (a dict)")
async def generate(request: Request) -> Response:
    return await text_generation(request, None, force_stream=False, wrap_list=False, full_text_default=False)


@router.post("/generate_stream", summary="TGI generate_stream (SSE)")
async def generate_stream(request: Request) -> Response:
    return await text_generation(request, None, force_stream=True, wrap_list=False, full_text_default=False)


@router.post("/pipeline/{task}/{model_id:path}", summary="A model run as the given task (HF API, 0.2x clients)")
async def pipeline(task: str, model_id: str, request: Request) -> Response:
    return await task_request(request, model_id, task)


@router.post("/models/{model_id:path}/pipeline/{task}", summary="A model run as the given task (HF router form)")
async def model_pipeline(model_id: str, task: str, request: Request) -> Response:
    return await task_request(request, model_id, task)


def model_routes(router_: APIRouter) -> None:
    """`/models/{id}`; registered last, since ids contain `/` and the path would swallow longer routes."""

    @router_.post("/models/{model_id:path}", summary="HF Inference API on a model")
    async def model(model_id: str, request: Request) -> Response:
        return await task_request(request, model_id, None)
