"""Composition root: settings -> store, counters, cache -> catalog -> engines -> gateway -> HTTP app.
Owns startup and shutdown order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Protocol

import uvicorn
from fastapi import FastAPI

from infergate import __version__
from infergate.catalog.catalog import Catalog, ModelSpec
from infergate.core.engine import ModelEngine
from infergate.core.tasks import EMBEDDING_TASKS, PIPELINE_TASKS, TEXT_GENERATION, TEXT_TO_IMAGE
from infergate.engines.diffusion.engine import DiffusionEngine
from infergate.engines.embeddings.engine import EmbeddingEngine
from infergate.engines.pipelines.engine import PipelineEngine
from infergate.engines.pool import LoadTimes, ModelPool
from infergate.engines.remote.board import Board, LocalBoard, RedisBoard
from infergate.engines.remote.engine import RemoteEndpoint, RemoteEngine
from infergate.engines.textgen.engine import TextGenEngine
from infergate.gateway.auth import Authenticator, ServiceAuthenticator
from infergate.gateway.cache_backends import CacheBackend, FallbackCache, InMemoryCache, RedisCache
from infergate.gateway.counters import Counters, FallbackCounters, InMemoryCounters, RedisCounters
from infergate.gateway.gateway import Gateway
from infergate.gateway.result_cache import ResultCache
from infergate.gateway.tiers import Limiter, TierPolicy
from infergate.gateway.usage import UsageRecorder
from infergate.http.factory import create_app
from infergate.http.state import AppState
from infergate.observability.instruments import Metrics
from infergate.observability.redact import RedactQuery
from infergate.settings import ModelEntry, Settings, SettingsError, secret
from infergate.store.records import UsageRow
from infergate.store.store import Store
from infergate.web.config import SsoConfig, WebConfig, templates
from infergate.web.mount import install as install_web

__all__ = ["build_app", "open_store", "run"]

log = logging.getLogger(__name__)


def open_store(settings: Settings) -> Store:
    """The database, migrated to the current schema (an upgrade keeps every row)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    store = Store(settings.database_url)
    store.migrate()
    return store


def _counters(settings: Settings) -> Counters:
    if settings.redis_url:
        return FallbackCounters(RedisCounters(settings.redis_url), InMemoryCounters())
    return InMemoryCounters()


def _cache_backend(settings: Settings) -> CacheBackend:
    local = InMemoryCache(settings.cache.max_entries, settings.cache.max_bytes)
    if settings.redis_url:
        return FallbackCache(RedisCache(settings.redis_url, prefix=f"{settings.redis_namespace}:cache:"), local)
    return local


class _LocalEngine(ModelEngine, Protocol):
    def stop(self, timeout: float = 5.0) -> None: ...


def _remote(settings: Settings, entry: ModelEntry) -> RemoteEngine:
    assert entry.remote is not None
    key_env = entry.api_key_env
    if key_env is None and entry.protocol == "infergate":
        key_env = settings.server.service_token_env  # engine-mode servers accept the shared service token
    api_key = secret(key_env)
    if key_env and api_key is None:
        log.warning("model %s: $%s is not set; calling its replicas without an API key", entry.id, key_env)
    r = settings.remote
    endpoint = RemoteEndpoint(
        urls=entry.remote,
        protocol=entry.protocol,
        remote_model=entry.remote_model or entry.id,
        api_key=api_key,
        eject_s=r.eject_s,
        probe_interval_s=r.probe_interval_s,
        connect_timeout_s=r.connect_timeout_s,
        read_timeout_s=r.read_timeout_s,
        affinity_chars=r.affinity_chars,
        affinity_slack=r.affinity_slack,
    )
    board: Board = RedisBoard(settings.redis_url, settings.redis_namespace) if settings.redis_url else LocalBoard()
    return RemoteEngine(entry.id, entry.task, endpoint, max_total_tokens=entry.max_total_tokens, board=board)


def _engines(settings: Settings, catalog: Catalog, metrics: Metrics) -> dict[str, _LocalEngine]:
    """One engine per catalog entry, by task; entries whose task no engine runs yet are skipped with a warning."""
    engines: dict[str, _LocalEngine] = {}
    settings_entry = {m.id: m for m in settings.models}
    pool = ModelPool(settings.engine.model_memory_mb, LoadTimes(settings.home / "load_times.json"))
    waiting, threads = settings.engine.max_waiting, settings.engine.threads
    for spec in catalog:
        if settings_entry[spec.id].remote is not None:
            engines[spec.id] = _remote(settings, settings_entry[spec.id])
        elif spec.task in EMBEDDING_TASKS:
            engines[spec.id] = EmbeddingEngine(spec.id, spec.source, max_waiting=waiting, threads=threads, pool=pool)
        elif spec.task == TEXT_TO_IMAGE:
            engines[spec.id] = DiffusionEngine(spec.id, spec.source, max_waiting=waiting, threads=threads, pool=pool)
        elif spec.task in PIPELINE_TASKS:
            engines[spec.id] = PipelineEngine(
                spec.id, spec.task, spec.source, max_waiting=waiting, threads=threads, pool=pool
            )
        elif spec.task == TEXT_GENERATION:
            engines[spec.id] = TextGenEngine(
                spec.id,
                spec.source,
                max_active=settings.engine.max_active,
                max_waiting=settings.engine.max_waiting,
                threads=settings.engine.threads,
                max_total_tokens=spec.max_total_tokens,
                dtype=settings_entry[spec.id].dtype,
                infill_format=settings_entry[spec.id].infill,
                runner=settings_entry[spec.id].runner,
                kv_cache_mb=settings.engine.kv_cache_mb,
                prefill_chunk=settings.engine.prefill_chunk,
                prefix_cache_mb=settings.engine.prefix_cache_mb,
                max_grammar_kb=settings.engine.max_grammar_kb,
                pool=pool,
                metrics=metrics.engine(spec.id),
            )
        else:
            log.warning("model %s: task %r is not served yet; skipping it", spec.id, spec.task)
    return engines


def build_app(settings: Settings) -> FastAPI:
    catalog = Catalog(
        ModelSpec(
            m.id,
            m.task,
            m.source or "remote:" + ",".join(m.remote or ()),
            m.load_at_startup,
            m.max_total_tokens,
            m.tiers,
        )
        for m in settings.models
    )
    store = open_store(settings)
    metrics = Metrics()  # the process-lifetime counters and histograms that /metrics renders
    engines = _engines(settings, catalog, metrics)
    engine_mode = settings.server.role == "engine"
    # Engine mode serves the gateway in front: no limits worth sharing, no cache, no usage of its own.
    counters = InMemoryCounters() if engine_mode else _counters(settings)
    cache_on = settings.cache.enabled and not engine_mode
    cache = ResultCache(_cache_backend(settings), settings.cache.ttl_s) if cache_on else None

    def write_usage(rows: list[UsageRow], touched: dict[int, datetime]) -> None:
        if rows:
            store.record_usage(rows)
        if touched:
            store.touch_tokens(touched)

    usage = UsageRecorder(write_usage)
    tiers = {name: TierPolicy(name=name, **t.model_dump()) for name, t in settings.tiers.items()}
    authenticator = Authenticator(
        store.principal_for_hash,
        allow_anonymous=settings.auth.allow_anonymous,
        cache_ttl_s=settings.auth.token_cache_ttl_s,
        session_lookup=store.session_for_hash,
    )
    if engine_mode:
        authenticator, tiers = _engine_mode(settings)
    gateway = Gateway(
        catalog,
        dict(engines),
        authenticator=authenticator,
        tiers=tiers,
        limiter=Limiter(counters, settings.redis_namespace, metrics),
        cache=cache,
        usage=None if engine_mode else usage,
        wait_for_model_s=settings.server.wait_for_model_s,
        default_max_tokens=settings.engine.default_max_tokens,
        prefix_per_user=settings.engine.prefix_cache_scope == "user",
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # uvicorn has configured its loggers by now: keep sign-in codes out of its access log.
        logging.getLogger("uvicorn.access").addFilter(RedactQuery())
        # Models load in the background: the server answers /health (503) at once, 200 when ready.
        for spec in catalog:
            engine = engines.get(spec.id)
            if engine is not None and (spec.load_at_startup or isinstance(engine, RemoteEngine)):
                engine.start()  # a remote model's replicas are probed from the start
        usage.start()
        yield
        # uvicorn has already let in-flight requests finish (up to graceful_shutdown_s); end the rest,
        # then write the last usage rows.
        for engine in engines.values():
            engine.stop()
            if isinstance(engine, RemoteEngine):
                await engine.aclose()
        await usage.close()
        if cache is not None:
            await cache.close()
        await counters.close()
        store.close()

    state = AppState(gateway=gateway, store=store, max_body_bytes=settings.server.max_body_bytes, version=__version__)
    app = create_app(state, lifespan)
    if settings.web.enabled and not engine_mode:
        install_web(app, _web_config(settings))
        state.pages = True
    return app


def _web_config(settings: Settings) -> WebConfig:
    sso = None
    s = settings.sso
    if s.issuer is not None:
        secret_value = secret(s.client_secret_env)
        if secret_value is None:
            log.warning("[sso]: $%s is not set; signing in as a public client (PKCE, no secret)", s.client_secret_env)
        sso = SsoConfig(s.issuer, s.client_id, secret_value, s.tier, s.scopes, s.name_claim, s.label)
    return WebConfig(session_ttl_s=settings.web.session_ttl_s, sso=sso, templates=templates())


_UNLIMITED = 1_000_000_000


def _engine_mode(settings: Settings) -> tuple[Authenticator, dict[str, TierPolicy]]:
    """The one caller, the gateway with the service token, on a tier without limits (the gateway keeps them)."""
    env_name = settings.server.service_token_env
    token = secret(env_name)
    if token is None:
        raise SettingsError(
            f"engine mode (`infergate serve --engine`) serves only a gateway holding the service token: set "
            f"${env_name} to a long random value here and on the gateway"
        )
    tier = TierPolicy("engine", _UNLIMITED, 1.0, _UNLIMITED, _UNLIMITED, _UNLIMITED, 0, 1 << 16, 10_000)
    return ServiceAuthenticator(token, env_name), {"engine": tier}


def run(settings: Settings) -> None:
    app = build_app(settings)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=settings.server.access_log,
        timeout_graceful_shutdown=int(settings.server.graceful_shutdown_s),
    )
