"""The HF task API (`POST /`, `POST /models/{id}`, the pipeline routes) and TGI's `/generate` and `/generate_stream`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from infergate.core.tasks import ALL_TASKS
from infergate.http.openapi import ERROR_RESPONSES, GENERATED, STREAM, TASK_ANSWER, json_body, task_body
from infergate.http.tasks import task_request
from infergate.http.textgen import text_generation
from infergate.protocols.tgi.schemas import GenerateRequest

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)

_GENERATE = json_body(GenerateRequest, text_plain=True)
# Documented as one of the tasks; an unknown one is this server's 400 (a plain str, so FastAPI never refuses it).
_Task = Annotated[str, Path(description="the task to run", json_schema_extra={"enum": sorted(ALL_TASKS)})]
_MODEL_TASK = (
    "The model's task decides which body applies (GET /v1/models lists each model's task; an unknown model is a "
    "404, a body for another task a 400 that names the model's task). An embedding model (feature-extraction) "
    "also takes a sentence-similarity body, told apart by `inputs.source_sentence`."
)
_PIPELINE_TASK = (
    "The `task` in the path decides which body applies; the model must serve that task (a model serving "
    "feature-extraction also serves sentence-similarity)."
)


# The HF API and TGI's `/` answer a list and include the prompt by default (the announcement's behaviour).
@router.post("/", summary="HF Inference API on the default model", openapi_extra=_GENERATE, responses=TASK_ANSWER)
async def compat(request: Request) -> Response:
    return await text_generation(request, None, force_stream=None, wrap_list=True, full_text_default=True)


@router.post("/generate", summary="TGI generate (a dict)", openapi_extra=_GENERATE, responses=GENERATED)
async def generate(request: Request) -> Response:
    return await text_generation(request, None, force_stream=False, wrap_list=False, full_text_default=False)


@router.post("/generate_stream", summary="TGI generate_stream (SSE)", openapi_extra=_GENERATE, responses=STREAM)
async def generate_stream(request: Request) -> Response:
    return await text_generation(request, None, force_stream=True, wrap_list=False, full_text_default=False)


# TGI's routes on one model of the catalog: what a gateway in front of an engine-mode infergate calls.
@router.post(
    "/models/{model_id:path}/generate",
    summary="TGI generate on a model",
    openapi_extra=_GENERATE,
    responses=GENERATED,
)
async def model_generate(model_id: str, request: Request) -> Response:
    return await text_generation(request, model_id, force_stream=False, wrap_list=False, full_text_default=False)


@router.post(
    "/models/{model_id:path}/generate_stream",
    summary="TGI generate_stream on a model",
    openapi_extra=_GENERATE,
    responses=STREAM,
)
async def model_generate_stream(model_id: str, request: Request) -> Response:
    return await text_generation(request, model_id, force_stream=True, wrap_list=False, full_text_default=False)


@router.post(
    "/pipeline/{task}/{model_id:path}",
    summary="A model run as the given task (HF API, 0.2x clients)",
    openapi_extra=task_body(_PIPELINE_TASK),
    responses=TASK_ANSWER,
)
async def pipeline(task: _Task, model_id: str, request: Request) -> Response:
    return await task_request(request, model_id, task)


@router.post(
    "/models/{model_id:path}/pipeline/{task}",
    summary="A model run as the given task (HF router form)",
    openapi_extra=task_body(_PIPELINE_TASK),
    responses=TASK_ANSWER,
)
async def model_pipeline(model_id: str, task: _Task, request: Request) -> Response:
    return await task_request(request, model_id, task)


def model_routes(router_: APIRouter) -> None:
    """`/models/{id}`; registered last, since ids contain `/` and the path would swallow longer routes."""

    @router_.post(
        "/models/{model_id:path}",
        summary="HF Inference API on a model",
        openapi_extra=task_body(_MODEL_TASK),
        responses={**ERROR_RESPONSES, **TASK_ANSWER},
    )
    async def model(model_id: str, request: Request) -> Response:
        return await task_request(request, model_id, None)
