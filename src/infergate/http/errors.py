"""The one place where errors become HTTP responses: ``{"error": message, "error_type": kind}``."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from infergate.core import errors
from infergate.http.accounting import quota_headers
from infergate.http.state import get_state

__all__ = [
    "error_headers",
    "error_payload",
    "install_error_handlers",
    "openai_error",
    "openai_error_response",
    "status_for",
]

log = logging.getLogger(__name__)

_STATUS: dict[type[errors.InfergateError], int] = {
    errors.ValidationError: 422,
    errors.BadRequestError: 400,
    errors.UnauthorizedError: 401,
    errors.ForbiddenError: 403,
    errors.RateLimitedError: 429,
    errors.NotFoundError: 404,
    errors.PayloadTooLargeError: 413,
    errors.NotAcceptableError: 406,
    errors.OverloadedError: 429,
    errors.GenerationError: 424,
    errors.ModelLoadingError: 503,
    errors.ModelLoadFailedError: 500,
    errors.ShuttingDownError: 503,
    errors.UpstreamUnavailableError: 503,
}


def status_for(exc: errors.InfergateError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def _openai_route(path: str) -> bool:
    return path.startswith("/v1/") or "/v1/" in path.removeprefix("/models/")


def openai_error(
    message: str, kind: str, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape: its SDK shows `error.message` to the user (a flat string reads "Error code: 422").
    The top-level `message` is for huggingface.js, which shows only a string `error`, `detail` or `message`
    (else "an HTTP error occurred"); OpenAI's SDKs read the `error` object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}, "message": message}


# OpenAI's error types and codes (its SDKs pick the exception from the status; people read these).
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_OPENAI_CODES: dict[type[errors.InfergateError], str] = {
    errors.ModelNotFoundError: "model_not_found",
    errors.UnauthorizedError: "invalid_api_key",
    errors.RateLimitedError: "rate_limit_exceeded",
    errors.OverloadedError: "model_overloaded",
    errors.ModelLoadingError: "model_loading",
}
# Core parameter names (TGI's, which the engine checks) as the OpenAI routes call them.
_CORE_PARAMS = {"max_new_tokens": "max_tokens", "truncate": "truncate_prompt_tokens"}
_NAMED = re.compile(r"`([A-Za-z_][\w.\[\]]*)`")


def _openai_param(exc: errors.InfergateError, path: str) -> str | None:
    """The request field an error is about, in the OpenAI route's words: the one the check named, else the
    first one its message names."""
    param = getattr(exc, "param", None)
    if param is None and isinstance(exc, errors.ValidationError):
        named = _NAMED.search(exc.detail)
        param = named.group(1) if named else None
    if param is None:
        return None
    head, dot, rest = param.partition(".")
    if head == "inputs":  # the engine's name for the prompt
        head = (
            "messages" if path.endswith("/chat/completions") else "input" if path.endswith("/embeddings") else "prompt"
        )
    return _CORE_PARAMS.get(head, head) + dot + rest


def openai_error_response(exc: errors.InfergateError, path: str) -> tuple[int, dict[str, Any]]:
    """OpenAI's answer to an error on a `/v1/` route: a bad parameter is a 400 `invalid_request_error` naming it
    (so the SDKs raise BadRequestError), with the message free of TGI's "Input validation error: " prefix."""
    status = status_for(exc)
    message = exc.message
    if isinstance(exc, errors.ValidationError):
        status, message = 400, exc.detail
    code = next((c for cls, c in _OPENAI_CODES.items() if isinstance(exc, cls)), None)
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return status, openai_error(message, kind, status, _openai_param(exc, path), code)


# huggingface_hub turns a body's `error_type` into a typed TGI error, and then skips its own handling of the
# status (its 429 message reads the RateLimit headers; its 401/403/404 errors are what users catch). So
# only TGI's own error types are sent as such.
_TGI_ERROR_TYPES = {"validation", "generation", "overloaded", "incomplete_generation"}


def error_payload(exc: errors.InfergateError) -> dict[str, Any]:
    payload: dict[str, Any] = {"error": exc.message}
    if exc.kind in _TGI_ERROR_TYPES:
        payload["error_type"] = exc.kind
    if isinstance(exc, errors.ModelLoadingError):
        payload["estimated_time"] = round(exc.estimated_time, 3)
    return payload


def error_headers(exc: errors.InfergateError) -> dict[str, str] | None:
    if isinstance(exc, errors.ModelLoadingError):
        return {"Retry-After": str(max(1, round(exc.estimated_time)))}
    if isinstance(exc, errors.RateLimitedError):
        return {**quota_headers(exc.quota), "Retry-After": str(max(1, math.ceil(exc.quota.reset_s)))}
    if isinstance(exc, errors.UpstreamUnavailableError):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if isinstance(exc, errors.UnauthorizedError):
        return {"WWW-Authenticate": "Bearer"}
    return None


def _remember(request: Request, status: int, message: str) -> None:
    """Keep the error for the admin page, with the route's template (never the raw path, which may be anything)."""
    ticket = getattr(request.state, "ticket", None)
    route = request.scope.get("route")
    get_state(request).errors.record(
        status,
        request.method,
        getattr(route, "path", request.url.path[:200]),
        ticket.spec.id if ticket is not None else None,
        ticket.principal.user_name if ticket is not None else None,
        message,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.InfergateError)
    async def _infergate(request: Request, exc: errors.InfergateError) -> JSONResponse:
        if _openai_route(request.url.path):
            status, payload = openai_error_response(exc, request.url.path)
        else:
            status, payload = status_for(exc), error_payload(exc)
        _remember(request, status, exc.message)
        return JSONResponse(payload, status_code=status, headers=error_headers(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (
                f"No route {request.method} {request.url.path}. Text generation is POST /models/{{model_id}}; "
                "see GET /docs for every route"
            )
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see GET /docs for the methods"
        else:
            message = str(exc.detail)
        if _openai_route(request.url.path):
            kind = _OPENAI_TYPES.get(exc.status_code, "invalid_request_error")
            return JSONResponse(openai_error(message, kind, exc.status_code), status_code=exc.status_code)
        return JSONResponse({"error": message, "error_type": "http"}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        _remember(request, 500, f"internal error: {type(exc).__name__}")
        return JSONResponse(
            {
                "error": f"Internal server error ({type(exc).__name__}); this is a bug in infergate and the "
                "server log has the details. Retrying may work.",
                "error_type": "internal",
            },
            status_code=500,
        )
