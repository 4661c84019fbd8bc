"""The counters and histograms the server updates as requests run, in one registry that lives as long as the
process (``metrics.py`` adds the gauges read from the engines when /metrics is scraped).

Names follow vLLM and TGI where they have one (``time_to_first_token_seconds``, ``prompt_tokens_total``, ...),
prefixed ``infergate_``. Every label value is bounded and public: a route template (never the raw path), a
catalog model id, a tier name, an HTTP status, a limit kind. Nothing a caller sends (a token above all) is a
label; ``NONE`` stands for a request that got no model or tier (a 401, a 404).

Hot path: one counter increment or ``observe()`` per event; prometheus_client's children take a short thread
lock of their own and nothing here awaits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["LIMITS", "NONE", "EngineMetrics", "Metrics", "TokenClock"]

NONE = "none"  # the label value of a request that never got a model, tier or route
LIMITS = ("api", "tokens", "concurrency")  # the tier limits that refuse a request (gateway/tiers.py)

# Seconds. Latencies of a small model on a CPU to a large one behind a remote engine (vLLM's ranges).
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_QUEUE_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # sequences in one decode step


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """What a local text generation engine reports, bound to its model (the engine thread observes them)."""

    queue_time: Histogram  # seconds a sequence waited for a row before its first admission
    batch_size: Histogram  # sequences computed in one decode step


class Metrics:
    """The process-lifetime registry. ``app.py`` makes one and hands it to the HTTP middleware, the gateway, the
    limiter and the engines; ``registry`` is rendered by /metrics beside the scrape-time collectors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "infergate_requests",
            "HTTP requests answered, by route template, model, status and tier",
            ["route", "model", "status", "tier"],
            registry=r,
        )
        self.request_duration = Histogram(
            "infergate_request_duration_seconds",
            "From the request's arrival to the end of its response (a stream's last event)",
            ["route", "model"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "infergate_time_to_first_token_seconds",
            "From the request's admission to its first generated token (local and remote engines)",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "infergate_inter_token_latency_seconds",
            "Between one generated token and the next of the same sequence",
            ["model"],
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "infergate_request_queue_time_seconds",
            "Time a sequence waited for a slot in a local text generation engine",
            ["model"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "infergate_batch_size",
            "Sequences computed together in one batched forward step of a local text generation engine",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "infergate_prompt_tokens",
            "Prompt tokens computed (not answered from the result cache)",
            ["model"],
            registry=r,
        )
        self.generation_tokens = Counter(
            "infergate_generation_tokens",
            "Tokens generated (not answered from the result cache)",
            ["model"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "infergate_cache_lookups", "Result cache lookups (requests that allowed the cache)", ["model"], registry=r
        )
        self.cache_hits = Counter(
            "infergate_cache_hits", "Requests answered from the result cache", ["model"], registry=r
        )
        self.rate_limited = Counter(
            "infergate_rate_limited",
            "Requests refused by a tier limit: api (requests per window), tokens (per minute), concurrency",
            ["tier", "limit"],
            registry=r,
        )

    def engine(self, model_id: str) -> EngineMetrics:
        """The instruments a local text generation engine of ``model_id`` observes."""
        return EngineMetrics(self.queue_time.labels(model_id), self.batch_size.labels(model_id))

    def request(self, route: str, model: str, status: int, tier: str, seconds: float) -> None:
        """One HTTP request answered (its response sent, or the client gone)."""
        self.requests.labels(route, model, str(status), tier).inc()
        self.request_duration.labels(route, model).observe(seconds)

    def tokens(self, model: str, prompt: int, generated: int) -> None:
        if prompt:
            self.prompt_tokens.labels(model).inc(prompt)
        if generated:
            self.generation_tokens.labels(model).inc(generated)

    def cache_lookup(self, model: str, hit: bool) -> None:
        self.cache_lookups.labels(model).inc()
        if hit:
            self.cache_hits.labels(model).inc()

    def refused(self, tier: str, limit: str) -> None:
        self.rate_limited.labels(tier, limit).inc()

    def clock(self, model: str, started: float) -> TokenClock:
        """Times the tokens of one sequence of ``model`` admitted at ``started`` (``time.perf_counter()``)."""
        return TokenClock(self.time_to_first_token.labels(model), self.inter_token_latency.labels(model), started)


class TokenClock:
    """Time to first token and inter-token latency of one sequence: ``tick()`` at each generated token."""

    __slots__ = ("_itl", "_last", "_started", "_ttft")

    def __init__(self, ttft: Histogram, itl: Histogram, started: float) -> None:
        self._ttft, self._itl = ttft, itl
        self._last: float | None = None
        self._started = started

    def tick(self) -> None:
        now = time.perf_counter()
        if self._last is None:
            self._ttft.observe(now - self._started)
        else:
            self._itl.observe(now - self._last)
        self._last = now
