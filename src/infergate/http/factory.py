"""Build the ASGI app: routes in matching order, error handlers, middleware."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from infergate.http.accounting import Accounting
from infergate.http.errors import install_error_handlers
from infergate.http.middleware import BodyLimit
from infergate.http.openapi import install as install_openapi
from infergate.http.routes import admin, hf, openai, ops
from infergate.http.state import AppState
from infergate.http.streaming import ClientGone

__all__ = ["create_app"]


def create_app(
    state: AppState, lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
) -> FastAPI:
    app = FastAPI(
        title="infergate",
        version=state.version,
        summary="Self-hosted Inference API: HF task API, TGI and OpenAI protocols",
        lifespan=lifespan,
    )
    app.state.infergate = state
    # Order matters: `/models/{id:path}` would swallow `/models/{id}/v1/chat/completions` and `/health`.
    app.include_router(openai.router)
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(hf.router)
    hf.model_routes(app.router)
    install_error_handlers(app)
    install_openapi(app)

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it; nginx's code for "client closed request"

    app.add_middleware(Accounting, finish=state.gateway.finish, metrics=state.gateway.metrics)
    app.add_middleware(BodyLimit, limit=state.max_body_bytes)
    return app
