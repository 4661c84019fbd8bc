"""/metrics on a real server: what requests do to the counters and histograms, and the Grafana dashboard in
deploy/grafana/ reading only metrics the server exports.

One server for the module: generous anonymous limits with the result cache on, a `tiny` tier whose token
budget refuses any request (the 429), and a remote model whose only replica never answers (so the
per-replica series exist)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.promql import load_dashboard, metric_names, panels
from tests.support.server import MODEL_ID, Server, serving

DEAD_REMOTE = "metrics/dead-remote"
CHAT = "/v1/chat/completions"
CONFIG = f"""
[tiers.anonymous]
requests = 1000000
tokens_per_minute = 100000000
concurrent = 64
max_new_tokens = 8192

[tiers.tiny]
requests = 1000
window = 300
tokens_per_minute = 4
concurrent = 4
max_new_tokens = 64

[[models]]
id = "{DEAD_REMOTE}"
task = "text-generation"
remote = ["http://127.0.0.1:9"]
protocol = "openai"
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("metrics-home"), CONFIG, token_tier="tiny", healthy=True)


def scrape(server: Server) -> tuple[str, Samples]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def eventually(read: Callable[[], float], expected: float, timeout: float = 5.0) -> float:
    """The request is counted when its response has ended, a moment after the client read its last byte."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if got >= expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def stream_chat(server: Server, use_cache: bool = True) -> dict[str, int]:
    """A streamed chat completion; its usage (the last chunk's, with `include_usage`)."""
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {} if use_cache else {"x-use-cache": "0"}
    usage: dict[str, int] = {}
    with httpx.stream("POST", server.base_url + CHAT, json=body, headers=headers, timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[len("data: ") :])
                usage = chunk.get("usage") or usage
    assert usage["completion_tokens"] > 1, usage
    return usage


def test_a_streamed_chat_is_counted_timed_and_its_tokens_added(server: Server) -> None:
    request = {"route": CHAT, "model": MODEL_ID, "status": "200", "tier": "anonymous"}
    _, before = scrape(server)
    usage = stream_chat(server, use_cache=False)  # computed, whatever ran before

    def counted() -> float:
        return value(scrape(server)[1], "infergate_requests_total", **request)

    assert eventually(counted, value(before, "infergate_requests_total", **request) + 1) == (
        value(before, "infergate_requests_total", **request) + 1
    )
    _, after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        return grown(before, after, name, **labels)

    model = {"model": MODEL_ID}
    assert grew("infergate_request_duration_seconds_count", route=CHAT, model=MODEL_ID) == 1
    assert grew("infergate_request_duration_seconds_sum", route=CHAT, model=MODEL_ID) > 0
    assert grew("infergate_time_to_first_token_seconds_count", **model) == 1
    assert grew("infergate_inter_token_latency_seconds_count", **model) == usage["completion_tokens"] - 1
    assert grew("infergate_request_queue_time_seconds_count", **model) == 1
    assert grew("infergate_batch_size_count", **model) >= usage["completion_tokens"] - 1
    assert grew("infergate_prompt_tokens_total", **model) == usage["prompt_tokens"]
    assert grew("infergate_generation_tokens_total", **model) == usage["completion_tokens"]


def test_a_tier_limit_refusal_is_counted_by_tier_and_limit(server: Server) -> None:
    """The tiny tier's 4 tokens a minute refuse a request for 8 (limit `tokens`); the token is no label."""
    refused = {"tier": "tiny", "limit": "tokens"}
    answered = {"route": CHAT, "model": MODEL_ID, "status": "429", "tier": "tiny"}
    _, before = scrape(server)
    response = httpx.post(
        server.base_url + CHAT,
        json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
        headers={"authorization": f"Bearer {server.token}"},
        timeout=60,
    )
    assert response.status_code == 429, response.text
    text = ""

    def counted() -> float:
        nonlocal text
        text, samples = scrape(server)
        return value(samples, "infergate_requests_total", **answered)

    assert eventually(counted, value(before, "infergate_requests_total", **answered) + 1) == (
        value(before, "infergate_requests_total", **answered) + 1
    )
    _, after = scrape(server)
    assert grown(before, after, "infergate_rate_limited_total", **refused) == 1
    secret = server.token.removeprefix("ig_")
    assert secret[:8] not in text and secret[-8:] not in text


def test_a_repeated_request_is_a_cache_hit(server: Server) -> None:
    body = {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 4}}
    _, before = scrape(server)
    first = httpx.post(server.model_url, json=body, timeout=60)
    second = httpx.post(server.model_url, json=body, timeout=60)
    assert first.status_code == second.status_code == 200
    assert second.headers["x-compute-type"] == "cache"
    _, after = scrape(server)
    assert grown(before, after, "infergate_cache_lookups_total", model=MODEL_ID) == 2
    assert grown(before, after, "infergate_cache_hits_total", model=MODEL_ID) == 1
    # The hit computed nothing: the tokens counted are the first answer's only.
    generated = int(first.headers["x-generated-tokens"])
    assert grown(before, after, "infergate_generation_tokens_total", model=MODEL_ID) == generated


def test_requests_without_a_model_or_route_are_counted_under_none(server: Server) -> None:
    """A 404 for a path no route serves, and a 401 for a bad token: counted, under the route template (never
    the raw path) and `none` for what they never got."""
    bad_token = "ig_" + "x" * 40
    unknown = {"route": "none", "model": "none", "status": "404", "tier": "none"}
    refused = {"route": CHAT, "model": "none", "status": "401", "tier": "none"}
    _, before = scrape(server)
    assert httpx.get(f"{server.base_url}/no/such/route-4242", timeout=10).status_code == 404
    unauthorized = httpx.post(
        server.base_url + CHAT,
        json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        headers={"authorization": f"Bearer {bad_token}"},
        timeout=30,
    )
    assert unauthorized.status_code == 401
    assert httpx.get(f"{server.base_url}/models/{MODEL_ID}/info", timeout=10).status_code == 200
    time.sleep(0.2)
    text, after = scrape(server)
    for labels in (unknown, refused):
        assert grown(before, after, "infergate_requests_total", **labels) == 1, labels
    assert value(after, "infergate_requests_total", route="/models/{model_id:path}/info", model="none",
                 status="200", tier="none") >= 1  # fmt: skip
    assert "route-4242" not in text and "x" * 20 not in text
    assert f'/models/{MODEL_ID}/info"' not in text  # the template, not the path


def test_model_state_is_one_hot_and_the_load_time_is_shown(server: Server) -> None:
    _, samples = scrape(server)
    states = {
        dict(labels)["state"]: v
        for (name, labels), v in samples.items()
        if name == "infergate_model_state" and dict(labels)["model"] == MODEL_ID
    }
    assert states == {"ready": 1.0, "loading": 0.0, "idle": 0.0, "failed": 0.0}
    assert value(samples, "infergate_model_ready", model=MODEL_ID) == 1
    assert value(samples, "infergate_model_load_seconds", model=MODEL_ID) > 0
    remote = {
        dict(labels)["state"]: v
        for (name, labels), v in samples.items()
        if name == "infergate_model_state" and dict(labels)["model"] == DEAD_REMOTE
    }
    assert sum(remote.values()) == 1


def exercise(server: Server) -> None:
    """One request of each kind, so that every labelled series a dashboard panel reads exists."""
    stream_chat(server)
    body = {"inputs": "Two plus two is", "parameters": {"max_new_tokens": 2}}
    for _ in range(2):
        assert httpx.post(server.model_url, json=body, timeout=60).status_code == 200
    httpx.post(
        server.base_url + CHAT,
        json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
        headers={"authorization": f"Bearer {server.token}"},
        timeout=60,
    )
    dead = {"model": DEAD_REMOTE, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    httpx.post(server.base_url + CHAT, json=dead, headers={"x-wait-for-model": "0"}, timeout=60)


def test_every_dashboard_query_reads_metrics_the_server_exports(server: Server) -> None:
    exercise(server)
    time.sleep(0.2)
    _, samples = scrape(server)
    exported = {name for name, _ in samples}
    dashboard = load_dashboard()
    queries: list[tuple[str, str]] = []
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        queries += [(panel["title"], t["expr"]) for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
            assert match, variable
            queries.append((f"${variable['name']}", match.group(1)))
    read = set()
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title!r}: no metric in {expr!r}"
        missing = names - exported
        assert not missing, f"panel {title!r} reads {sorted(missing)}, which /metrics does not export"
        read |= names
    # The dashboard covers what the server exports that an operator watches.
    for wanted in ("infergate_requests_total", "infergate_time_to_first_token_seconds_bucket",
                   "infergate_replica_ejections_total", "infergate_prefix_cache_hit_tokens_total",
                   "infergate_model_state", "infergate_rate_limited_total"):  # fmt: skip
        assert wanted in read


def test_the_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all({"h", "w", "x", "y"} <= set(p["gridPos"]) for p in dashboard["panels"])
    assert Path(__file__).resolve().parents[2].joinpath("deploy/grafana/infergate.json").is_file()
