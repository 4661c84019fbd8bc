"""The metrics registry, the labels it is given and the dashboard queries' metric names, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infergate.core.engine import EngineState, EngineStats
from infergate.core.errors import RateLimitedError
from infergate.gateway.counters import InMemoryCounters
from infergate.gateway.gateway import _timed
from infergate.gateway.principal import Principal
from infergate.gateway.tiers import Limiter, TierPolicy
from infergate.http.accounting import route_template
from infergate.observability.instruments import NONE, Metrics
from infergate.observability.metrics import MODEL_STATES, render_metrics
from tests.support.promql import load_dashboard, metric_names, panels


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


@dataclass
class _Engine:
    status: str
    load_s: float | None = None
    tasks: frozenset[str] = field(default_factory=lambda: frozenset({"text-generation"}))
    compute_type: str = "cpu"

    def state(self) -> EngineState:
        return EngineState(self.status)

    def stats(self) -> EngineStats:
        return EngineStats(active=3, waiting=1, load_s=self.load_s)


def test_render_shows_the_registry_and_the_engines_state() -> None:
    metrics = Metrics()
    metrics.request("/v1/chat/completions", "m", 200, "free", 0.5)
    metrics.tokens("m", prompt=12, generated=5)
    metrics.cache_lookup("m", hit=True)
    metrics.cache_lookup("m", hit=False)
    metrics.refused("free", "tokens")
    engines: dict[str, Any] = {"m": _Engine("ready", 1.5), "lazy": _Engine("idle")}
    body, content_type = render_metrics(engines, metrics)
    assert content_type.startswith("text/plain")
    got = samples(body)

    def one(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    labels = {"route": "/v1/chat/completions", "model": "m", "status": "200", "tier": "free"}
    assert one("infergate_requests_total", **labels) == 1
    assert one("infergate_request_duration_seconds_count", route="/v1/chat/completions", model="m") == 1
    assert one("infergate_request_duration_seconds_sum", route="/v1/chat/completions", model="m") == 0.5
    assert one("infergate_prompt_tokens_total", model="m") == 12
    assert one("infergate_generation_tokens_total", model="m") == 5
    assert one("infergate_cache_lookups_total", model="m") == 2
    assert one("infergate_cache_hits_total", model="m") == 1
    assert one("infergate_rate_limited_total", tier="free", limit="tokens") == 1
    assert one("infergate_active_sequences", model="m") == 3
    assert one("infergate_model_load_seconds", model="m") == 1.5
    assert ("infergate_model_load_seconds", frozenset({("model", "lazy")})) not in got  # never loaded
    for model, status in (("m", "ready"), ("lazy", "idle")):
        assert {s: one("infergate_model_state", model=model, state=s) for s in MODEL_STATES} == {
            s: 1.0 if s == status else 0.0 for s in MODEL_STATES
        }
    assert one("infergate_model_ready", model="lazy") == 0


def test_each_metrics_object_is_its_own_registry() -> None:
    """No module global: two apps in one process (the tests' own) count apart."""
    first, second = Metrics(), Metrics()
    first.refused("free", "api")
    assert ("infergate_rate_limited_total", frozenset({("tier", "free"), ("limit", "api")})) in samples(
        render_metrics({}, first)[0]
    )
    assert not any(name == "infergate_rate_limited_total" for name, _ in samples(render_metrics({}, second)[0]))


def test_the_token_clock_times_the_first_token_then_the_gaps() -> None:
    metrics = Metrics()
    clock = metrics.clock("m", started=0.0)  # perf_counter's origin: a first token "long" after the start
    for _ in range(4):
        clock.tick()
    got = samples(render_metrics({}, metrics)[0])
    assert got[("infergate_time_to_first_token_seconds_count", frozenset({("model", "m")}))] == 1
    assert got[("infergate_inter_token_latency_seconds_count", frozenset({("model", "m")}))] == 3
    assert got[("infergate_time_to_first_token_seconds_sum", frozenset({("model", "m")}))] > 0


def test_engine_metrics_are_bound_to_the_model() -> None:
    metrics = Metrics()
    bound = metrics.engine("m")
    bound.queue_time.observe(0.25)
    bound.batch_size.observe(4)
    got = samples(render_metrics({}, metrics)[0])
    assert got[("infergate_request_queue_time_seconds_sum", frozenset({("model", "m")}))] == 0.25
    assert got[("infergate_batch_size_bucket", frozenset({("model", "m"), ("le", "4.0")}))] == 1
    assert got[("infergate_batch_size_bucket", frozenset({("model", "m"), ("le", "2.0")}))] == 0


@pytest.mark.parametrize(
    ("limit", "tier"),
    [
        ("api", TierPolicy("tiny", 0, 60.0, 1000, 1, 64, 0)),
        ("tokens", TierPolicy("tiny", 10, 60.0, 4, 1, 64, 0)),
        ("concurrency", TierPolicy("tiny", 10, 60.0, 1000, 1, 64, 0)),
    ],
)
def test_the_limiter_counts_each_refusal_by_tier_and_limit(limit: str, tier: TierPolicy) -> None:
    metrics = Metrics()
    limiter = Limiter(InMemoryCounters(), metrics=metrics)
    who = Principal(key="user:1", tier="tiny")

    async def run() -> None:
        with pytest.raises(RateLimitedError):
            if limit == "api":
                await limiter.count_request(who, tier)
            elif limit == "tokens":
                await limiter.reserve_tokens(who, tier, 8)
            else:
                await limiter.acquire_slot(who, tier)
                await limiter.acquire_slot(who, tier)

    asyncio.run(run())
    got = samples(render_metrics({}, metrics)[0])
    assert got[("infergate_rate_limited_total", frozenset({("tier", "tiny"), ("limit", limit)}))] == 1


def test_the_route_label_is_the_template_or_none() -> None:
    @dataclass
    class Route:
        path: str

    assert route_template({"type": "http", "route": Route("/models/{model_id:path}")}) == "/models/{model_id:path}"
    assert route_template({"type": "http", "path": "/models/secret-typo"}) == NONE


def test_timing_a_stream_closes_the_engine_stream_when_the_consumer_leaves() -> None:
    """The engine aborts a request when its generator is closed: the timing wrapper must pass the close on."""
    closed: list[bool] = []

    async def engine() -> AsyncGenerator[Any, None]:
        try:
            for i in range(10):
                yield i
        finally:
            closed.append(True)

    async def run() -> None:
        metrics = Metrics()
        events = _timed(engine(), metrics.clock("m", 0.0))
        async for event in events:
            if event == 2:
                break
        await events.aclose()

    asyncio.run(run())
    assert closed == [True]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (route, status) (rate(infergate_requests_total{status=~"5..", route!="/x"}[$__rate_interval]))',
            {"infergate_requests_total"},
        ),
        (
            'histogram_quantile(0.95, sum by (le, model) (rate(infergate_ttft_bucket{model=~"$model"}[5m])))',
            {"infergate_ttft_bucket"},
        ),
        ("sum(rate(a_sum[1m])) / ignoring(x) group_left sum(rate(a_count[1m]))", {"a_sum", "a_count"}),
        ("infergate_model_state == 1 and on(model) infergate_model_ready offset 5m", {"infergate_model_state",
                                                                                        "infergate_model_ready"}),
        ("increase(x_total[$__range]) > bool 1e3", {"x_total"}),
        ('label_replace(up, "a", "$1", "b", "(.*)")', {"up"}),
    ],
)  # fmt: skip
def test_metric_names_of_a_promql_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_dashboard_panel_has_a_query_that_names_a_metric() -> None:
    dashboard = load_dashboard()
    found = list(panels(dashboard))
    assert len(found) >= 15
    for panel in found:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert all(n.startswith("infergate_") for n in metric_names(target["expr"])), target["expr"]
