"""Composition root: settings -> catalog -> engines -> gateway -> HTTP app; owns startup and shutdown order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from infergate import __version__
from infergate.catalog.catalog import Catalog, ModelSpec
from infergate.core.engine import TextGenerator
from infergate.engines.textgen.engine import TextGenEngine
from infergate.gateway.gateway import Gateway
from infergate.http.factory import create_app
from infergate.http.state import AppState
from infergate.settings import Settings

__all__ = ["build_app", "run"]

log = logging.getLogger(__name__)

# How long `x-wait-for-model: true` may hold a request while its model loads.
WAIT_FOR_MODEL_S = 300.0


def build_app(settings: Settings) -> FastAPI:
    catalog = Catalog(ModelSpec(m.id, m.task, m.source, m.load_at_startup, m.max_total_tokens) for m in settings.models)
    engines: dict[str, TextGenEngine] = {}
    for spec in catalog:
        if spec.task != "text-generation":
            log.warning("model %s: task %r is not served yet; skipping it", spec.id, spec.task)
            continue
        engines[spec.id] = TextGenEngine(
            spec.id,
            spec.source,
            max_active=settings.engine.max_active,
            max_waiting=settings.engine.max_waiting,
            threads=settings.engine.threads,
            default_max_tokens=settings.engine.default_max_tokens,
            max_total_tokens=spec.max_total_tokens,
        )
    typed: dict[str, TextGenerator] = dict(engines)
    gateway = Gateway(catalog, typed, WAIT_FOR_MODEL_S)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Models load in the background: the server answers /health (503) at once, 200 when ready.
        for engine in engines.values():
            engine.start()
        yield
        # uvicorn has already let in-flight requests finish (up to graceful_shutdown_s); end the rest.
        for engine in engines.values():
            engine.stop()

    state = AppState(gateway=gateway, max_body_bytes=settings.server.max_body_bytes, version=__version__)
    return create_app(state, lifespan)


def run(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    app = build_app(settings)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        timeout_graceful_shutdown=int(settings.server.graceful_shutdown_s),
    )
