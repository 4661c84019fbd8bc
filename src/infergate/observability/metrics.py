"""Prometheus metrics: the process-lifetime counters and histograms (``instruments.Metrics``) and the gauges read
from the engines when scraped (no counters to keep in sync with an engine's own state)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from infergate.core.engine import ModelEngine, Replicated
from infergate.observability.instruments import Metrics

__all__ = ["MODEL_STATES", "render_metrics"]

MODEL_STATES = ("ready", "loading", "idle", "failed")  # infergate_model_state's one-hot `state` values


def render_metrics(engines: Mapping[str, ModelEngine], metrics: Metrics) -> tuple[bytes, str]:
    """The exposition text of ``metrics`` and of the engines as they are now, and its content type."""
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
    state = Gauge(
        "infergate_model_state",
        "1 for the state the model is in (ready, loading, idle, failed)",
        ["model", "state"],
        registry=registry,
    )
    load_s = Gauge(
        "infergate_model_load_seconds",
        "How long the model's last load in this process took",
        ["model"],
        registry=registry,
    )
    for model_id, engine in engines.items():
        stats = engine.stats()
        status = engine.state().status
        active.labels(model_id).set(stats.active)
        waiting.labels(model_id).set(stats.waiting)
        cached.labels(model_id).set(stats.cached_tokens)
        ready.labels(model_id).set(1 if status == "ready" else 0)
        for name in MODEL_STATES:
            state.labels(model_id, name).set(1 if status == name else 0)
        if stats.load_s is not None:
            load_s.labels(model_id).set(stats.load_s)
    registry.register(_ReplicaCollector(engines))
    registry.register(_PrefixCacheCollector(engines))
    registry.register(_GrammarCollector(engines))
    registry.register(_Forward(metrics.registry))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Forward(Collector):
    """The process-lifetime registry's metrics, rendered with the scrape-time ones."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self._registry.collect()


class _GrammarCollector(Collector):
    """Grammars (JSON schemas, regexes, tool calls) compiled for constrained decoding: a count that grows with
    every request says that callers send a new schema each time, and that each pays the compilation."""

    def __init__(self, engines: Mapping[str, ModelEngine]) -> None:
        self._engines = engines

    def collect(self):  # type: ignore[no-untyped-def]
        compiled = CounterMetricFamily(
            "infergate_grammars_compiled",
            "Grammars compiled (not found compiled) since the model loaded",
            labels=["model"],
        )
        for model_id, engine in self._engines.items():
            count = engine.stats().grammars_compiled
            if count is not None:
                compiled.add_metric([model_id], count)
        yield compiled


class _PrefixCacheCollector(Collector):
    """Each chat model's prefix cache (vLLM counts queried and hit tokens the same way)."""

    def __init__(self, engines: Mapping[str, ModelEngine]) -> None:
        self._engines = engines

    def collect(self):  # type: ignore[no-untyped-def]
        name = "infergate_prefix_cache_"
        counters = {
            "lookups": CounterMetricFamily(name + "lookups", "Prompts looked up", labels=["model"]),
            "hits": CounterMetricFamily(name + "hits", "Prompts that started from a cached prefix", labels=["model"]),
            "queried_tokens": CounterMetricFamily(name + "queried_tokens", "Prompt tokens looked up", labels=["model"]),
            "hit_tokens": CounterMetricFamily(name + "hit_tokens", "Prompt tokens found computed", labels=["model"]),
            "evictions": CounterMetricFamily(name + "evictions", "Entries dropped for room", labels=["model"]),
        }
        rate = GaugeMetricFamily(name + "hit_rate", "Hit tokens over queried tokens, since start", labels=["model"])
        held = GaugeMetricFamily(name + "bytes", "Bytes the prefix cache holds", labels=["model"])
        entries = GaugeMetricFamily(name + "entries", "Prefixes the cache holds", labels=["model"])
        for model_id, engine in self._engines.items():
            stats = engine.stats().prefix
            if stats is None:
                continue
            for key, family in counters.items():
                family.add_metric([model_id], getattr(stats, key))
            rate.add_metric([model_id], stats.hit_tokens / stats.queried_tokens if stats.queried_tokens else 0.0)
            held.add_metric([model_id], stats.bytes)
            entries.add_metric([model_id], stats.entries)
        yield from counters.values()
        yield rate
        yield held
        yield entries


class _ReplicaCollector(Collector):
    """Per-replica counters of remote models, read from the engines' own counts at scrape time."""

    def __init__(self, engines: Mapping[str, ModelEngine]) -> None:
        self._engines = engines

    def collect(self):  # type: ignore[no-untyped-def]
        labels = ["model", "replica"]
        families = {
            "requests": CounterMetricFamily("infergate_replica_requests", "Attempts sent to a replica", labels=labels),
            "errors": CounterMetricFamily("infergate_replica_errors", "Attempts a replica failed", labels=labels),
            "retries": CounterMetricFamily(
                "infergate_replica_retries", "Attempts a replica took over from another", labels=labels
            ),
            "ejections": CounterMetricFamily(
                "infergate_replica_ejections", "Times a replica was ejected", labels=labels
            ),
        }
        in_flight = GaugeMetricFamily("infergate_replica_in_flight", "Requests on a replica now", labels=labels)
        up = GaugeMetricFamily("infergate_replica_up", "1 when a replica takes requests", labels=labels)
        latency = SummaryMetricFamily(
            "infergate_replica_first_byte_seconds", "Time to a replica's first answer", labels=labels
        )
        for model_id, engine in self._engines.items():
            if not isinstance(engine, Replicated):
                continue
            for r in engine.replica_views():
                key = [model_id, r.url]
                families["requests"].add_metric(key, r.requests)
                families["errors"].add_metric(key, r.errors)
                families["retries"].add_metric(key, r.retries)
                families["ejections"].add_metric(key, r.ejections)
                in_flight.add_metric(key, r.in_flight)
                up.add_metric(key, 1 if r.state == "up" else 0)
                latency.add_metric(key, r.latency_count, r.latency_sum_s)
        yield from families.values()
        yield in_flight
        yield up
        yield latency
