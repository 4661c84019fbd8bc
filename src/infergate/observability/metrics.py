"""Prometheus metrics, read from the engines when scraped (no counters to keep in sync)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from infergate.core.engine import ModelEngine

__all__ = ["render_metrics"]


def render_metrics(engines: Mapping[str, ModelEngine]) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    active = Gauge("infergate_active_sequences", "Sequences being generated", ["model"], registry=registry)
    waiting = Gauge("infergate_waiting_requests", "Requests queued for a slot", ["model"], registry=registry)
    cached = Gauge(
        "infergate_kv_cache_tokens",
        "Positions the running sequences hold in the KV cache",
        ["model"],
        registry=registry,
    )
    ready = Gauge("infergate_model_ready", "1 when the model is loaded and serving", ["model"], registry=registry)
    for model_id, engine in engines.items():
        stats = engine.stats()
        active.labels(model_id).set(stats.active)
        waiting.labels(model_id).set(stats.waiting)
        cached.labels(model_id).set(stats.cached_tokens)
        ready.labels(model_id).set(1 if engine.state().status == "ready" else 0)
    return generate_latest(registry), CONTENT_TYPE_LATEST
