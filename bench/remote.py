"""A gateway in front of remote engines (issue 12): llama.cpp's own server (`python -m llama_cpp.server`, the
packaged SmolLM2-135M-Instruct Q4_1 GGUF, one thread each) behind `infergate serve` with a `remote = [...]`
catalog entry, on loopback. Three measures, each in the same run as its own baseline:

1. Added latency. One engine, one gateway in front of it. The same tiny completion (`max_tokens: 1`, greedy,
   the same short prompt, so llama.cpp's one-prompt prefix cache keeps the engine's part small and steady) sent
   in turn straight to the engine, straight to the engine streamed (what the gateway itself sends upstream)
   and through the gateway, one at a time, one persistent connection per target. The paired difference
   (gateway_i - direct_i) is what the gateway adds: parsing, admission, the streamed upstream call and
   re-rendering the answer. Target: <= 2 ms at p50 (LiteLLM publishes 2 ms p50, 8 ms p95).
2. A replica dies under load. Two engines, two gateway processes sharing replica state through Redis (a
   namespace of their own, deleted after), 3 clients per gateway sending short non-streamed generations; one
   engine is SIGKILLed a few seconds in. Counted: requests that failed (the gateway moves an attempt to the
   other replica before its first token, and runs a whole answer cut mid-way once more), retries, and for each
   gateway how long after the kill its /v1/models first shows the dead replica `ejected` (polled every 20 ms).
   Target: no lost non-streamed request, every gateway ejects within 1 s.
3. Prefix affinity. Two engines, one gateway; 4 tenants, each with its own ~1,500-character system prompt and
   short varying questions, 2 clients, a seeded shuffled order; streamed completions, time to the first
   non-empty token. llama.cpp's server reuses the KV of the longest common prefix with its previous prompt
   only, so a request is fast when its replica's last prompt was the same tenant's. Once with affinity off
   (power of two choices), once with `affinity_chars = 200` (a tenant's prompts go to one replica by
   rendezvous hashing); the engines' caches are reset before each run by an unrelated prompt sent to each.

    .venv/bin/python bench/remote.py [--direct-n 100] [--kill-s 20] [--affinity-requests 40] [--json]
    .venv/bin/python bench/remote.py --phases 2,3 --probe-interval-s 3600   # failures alone eject replicas
    .venv/bin/python bench/remote.py --phases 3 --affinity-slack 0          # affinity only onto an idle replica

`--probe-interval-s` is the gateways' `[remote] probe_interval_s` (0.5 s, as in issue 12's example). A gateway
probes each replica with GET /v1/models, which llama-cpp-python's server answers only once the generations
queued before it are done; a long interval leaves ejections to failed requests (connection refused, reset) and
separates what the probe does under load from what a kill does. Retries counted in phase 2 are the
gateways' `infergate_replica_retries_total` (failovers before a first token); a whole answer cut mid-way is run
once more by the gateway and not counted there.

Starts every process itself (engines on free loopback ports, gateways with their own data directories) and
stops them all, also on failure. Needs Redis on 127.0.0.1:6379 for phase 2 (`--phases 1,3` skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.llama_log import prefix_hits  # noqa: E402
from tests.support.remote import GGUF  # noqa: E402
from tests.support.server import MODEL_ID, Server, free_port, start_server  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
SHORT_PROMPT = "The capital of France is"
WORDS = (
    "invoice ledger shipment orchard glacier violin harbor quarry lantern meadow compass furnace archive "
    "pigment cathedral turbine saddle canyon telescope bakery voltage falcon textile monsoon sculpture "
    "reservoir pharmacy orbit chisel vineyard parcel beacon tundra marble kettle freight cipher lagoon "
    "pavilion satchel ember quartz ridge tariff mosaic lumber harness plateau sonnet"
).split()


def gateway_config(
    urls: list[str], probe_interval_s: float, affinity_chars: int = 0, top: str = "", affinity_slack: int | None = None
) -> str:
    """The catalog entry of issue 12: the packaged model's id served by ``urls`` over the OpenAI protocol; open
    anonymous limits and no result cache (every request must reach an engine)."""
    remote = ", ".join(f'"{u}"' for u in urls)
    return f"""{top}
[[models]]
id = "{MODEL_ID}"
task = "text-generation"
remote = [{remote}]
protocol = "openai"

[remote]
probe_interval_s = {probe_interval_s}
eject_s = 5.0
affinity_chars = {affinity_chars}
{"" if affinity_slack is None else f"affinity_slack = {affinity_slack}"}

[cache]
enabled = false

[tiers.anonymous]
requests = 1000000
tokens_per_minute = 100000000
concurrent = 64
max_new_tokens = 8192
"""


@dataclass
class Llama:
    """llama.cpp's server, started as issue 12 says (no --logits_all: prompts are evaluated for
    their last token's logits only, as a production engine would be)."""

    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> Llama:
        args = [
            sys.executable, "-m", "llama_cpp.server", "--model", GGUF, "--model_alias", MODEL_ID,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
            # One thread for prompts too (its default is every core: two engines on 2 cores would fight).
            "--n_threads", "1", "--n_threads_batch", "1",
            "--interrupt_requests", "false",  # its default cuts a running answer whenever another request arrives
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout: float = 120) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"llama.cpp server not up:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def prefix_hits(self, since: int) -> list[int]:
        """Prompt tokens reused from the previous prompt, per request logged after byte ``since``."""
        return prefix_hits(self.log_path, since)


class Processes:
    """Everything a phase started, stopped in reverse order whatever happens."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._stoppers: list[Any] = []

    def llamas(self, n: int) -> list[Llama]:
        engines = [Llama(self.work / f"llama-{uuid.uuid4().hex[:6]}.log") for _ in range(n)]
        for engine in engines:
            self._stoppers.append(engine.stop)
            engine.spawn()
        for engine in engines:
            engine.wait()
        return engines

    def gateways(self, configs: list[str]) -> list[Server]:
        servers = []
        for config in configs:
            server = start_server(self.work / f"gw-{uuid.uuid4().hex[:6]}", config=config)
            self._stoppers.append(server.stop)
            servers.append(server)
        for server in servers:
            server.wait_healthy(120)
        return servers

    def stop_all(self) -> None:
        while self._stoppers:
            with contextlib.suppress(Exception):
                self._stoppers.pop()()


def _pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (q in 0..100)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _metric_sum(base: str, name: str, replica: str | None = None) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and (replica is None or f'replica="{replica}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _replica_state(base: str, url: str) -> str | None:
    for model in httpx.get(f"{base}/v1/models", timeout=5).json()["data"]:
        for replica in model.get("replicas") or []:
            if replica["url"] == url:
                return str(replica["state"])
    return None


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
    for row in rows:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))


# -- 1. added latency ----------------------------------------------------------------------------------------
def phase_added(procs: Processes, n: int, probe_interval_s: float) -> dict[str, Any]:
    (engine,) = procs.llamas(1)
    (gateway,) = procs.gateways([gateway_config([engine.url], probe_interval_s)])
    body = {"model": MODEL_ID, "prompt": SHORT_PROMPT, "max_tokens": 1, "temperature": 0}
    direct_body = {**body, "repeat_penalty": 1.0}  # what the gateway sends for a request that asks no penalty
    # What the gateway itself sends upstream: the same, streamed, usage asked for.
    streamed_body = {**direct_body, "stream": True, "stream_options": {"include_usage": True}}
    series: dict[str, list[float]] = {"direct": [], "streamed": [], "gateway": []}
    mismatches = 0
    with (
        httpx.Client(base_url=engine.url, timeout=30) as direct,
        httpx.Client(base_url=gateway.base_url, timeout=30) as through,
    ):

        def plain(client: httpx.Client, payload: dict[str, Any]) -> tuple[float, str]:
            t0 = time.perf_counter()
            r = client.post("/v1/completions", json=payload)
            elapsed = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            return elapsed, r.json()["choices"][0]["text"]

        def streamed() -> tuple[float, str]:
            t0 = time.perf_counter()
            with direct.stream("POST", "/v1/completions", json=streamed_body) as r:
                r.raise_for_status()
                for _ in r.iter_lines():
                    pass
            return (time.perf_counter() - t0) * 1000, ""

        calls = {
            "direct": lambda: plain(direct, direct_body),
            "streamed": streamed,
            "gateway": lambda: plain(through, body),
        }
        for _ in range(5):  # warm-up: connections, the engine's cache, the gateway's first-request paths
            for call in calls.values():
                call()
        order = list(calls)
        for i in range(n):
            texts = {}
            for name in order[i % 3 :] + order[: i % 3]:  # rotate, so that none always follows another
                elapsed, texts[name] = calls[name]()
                series[name].append(elapsed)
            mismatches += texts["direct"] != texts["gateway"]
    added = [g - d for g, d in zip(series["gateway"], series["direct"], strict=True)]
    added_streamed = [g - d for g, d in zip(series["gateway"], series["streamed"], strict=True)]
    result: dict[str, Any] = {"requests_each": n, "text_mismatches": mismatches}
    for name, values in [*series.items(), ("added", added), ("added_over_streamed", added_streamed)]:
        result[f"{name}_p50_ms"] = _pct(values, 50)
        result[f"{name}_p95_ms"] = _pct(values, 95)
    labels = {
        "direct": "llama.cpp server directly",
        "gateway": "through infergate",
        "added": "added (gateway_i - direct_i)",
        "streamed": "llama.cpp directly, streamed as the gateway asks",
        "added_over_streamed": "gateway_i - streamed direct_i",
    }
    _print_table(
        f"1. added latency: POST /v1/completions, max_tokens 1, greedy, same prompt; {n} of each, sequential, "
        "interleaved",
        ["", "p50 ms", "p95 ms"],
        [[label, f"{result[k + '_p50_ms']:.2f}", f"{result[k + '_p95_ms']:.2f}"] for k, label in labels.items()],
    )
    if mismatches:
        print(f"  {mismatches} answers differed between the direct and the gateway call")
    return result


# -- 2. a replica dies under load ---------------------------------------------------------------------------
@dataclass
class _Call:
    gateway: int
    start: float
    end: float
    status: int  # 0: no HTTP answer
    detail: str = ""


def _watch_replica(base: str, url: str, until: float, every_s: float) -> list[tuple[float, str]]:
    """(time, state) of ``url`` on the gateway at ``base`` until ``until``, each time the state changes."""
    changes: list[tuple[float, str]] = []
    with httpx.Client(base_url=base, timeout=5) as http:
        while (asked := time.monotonic()) < until:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                for model in http.get("/v1/models").json()["data"]:
                    for replica in model.get("replicas") or []:
                        if replica["url"] == url and (not changes or changes[-1][1] != replica["state"]):
                            changes.append((asked, str(replica["state"])))
            time.sleep(max(0.0, asked + every_s - time.monotonic()))
    return changes


def phase_kill(
    procs: Processes, duration_s: float, kill_at_s: float, clients_per_gateway: int, probe_interval_s: float
) -> dict[str, Any]:
    import redis

    namespace = f"infergate-bench-{uuid.uuid4().hex[:10]}"
    try:
        a, b = procs.llamas(2)
        top = f'redis_url = "{REDIS_URL}"\nredis_namespace = "{namespace}"\n'
        gateways = procs.gateways([gateway_config([a.url, b.url], probe_interval_s, top=top)] * 2)
        for g in gateways:  # a gateway starts probing and syncing its replicas on its first request
            httpx.post(g.model_url, json={"inputs": "Hi", "parameters": {"max_new_tokens": 1}}, timeout=60)
        calls: list[_Call] = []
        lock = threading.Lock()
        t0 = time.monotonic()
        stop_at = t0 + duration_s

        def client(index: int, gateway: int) -> None:
            url = gateways[gateway].model_url
            with httpx.Client(timeout=60) as http:
                i = 0
                while time.monotonic() < stop_at:
                    i += 1
                    payload = {"inputs": f"Client {index}, request {i}: write a line about the sea.",
                               "parameters": {"max_new_tokens": 8}}  # fmt: skip
                    start = time.monotonic()
                    try:
                        r = http.post(url, json=payload)
                        call = _Call(gateway, start, time.monotonic(), r.status_code, r.text[:300])
                    except httpx.HTTPError as exc:
                        call = _Call(gateway, start, time.monotonic(), 0, f"{type(exc).__name__}: {exc}")
                    with lock:
                        calls.append(call)

        threads = [
            threading.Thread(target=client, args=(k, k % len(gateways)), daemon=True)
            for k in range(clients_per_gateway * len(gateways))
        ]
        for t in threads:
            t.start()
        # Both gateways' view of A, every 20 ms, from 1 s before the kill to 5 s after.
        watched: dict[int, list[tuple[float, str]]] = {}
        kill_at = t0 + kill_at_s
        watchers = [
            threading.Thread(
                target=lambda i=i: watched.__setitem__(
                    i, _watch_replica(gateways[i].base_url, a.url, kill_at + 5.0, 0.02)
                ),
                daemon=True,
            )
            for i in range(len(gateways))
        ]
        time.sleep(max(0.0, kill_at - 1.0 - time.monotonic()))
        for t in watchers:
            t.start()
        time.sleep(max(0.0, kill_at - time.monotonic()))
        a.kill()
        killed = time.monotonic()
        for t in [*watchers, *threads]:
            t.join(duration_s + 90)
        metrics = {
            f"{name}_{label}": sum(_metric_sum(g.base_url, f"infergate_replica_{name}_total", r.url) for g in gateways)
            for name in ("requests", "retries", "ejections")
            for label, r in (("a", a), ("b", b))
        }
    finally:
        with contextlib.suppress(Exception):
            store = redis.Redis.from_url(REDIS_URL)
            keys = list(store.scan_iter(f"{namespace}:*"))
            if keys:
                store.delete(*keys)
            store.close()

    def seen_ms(changes: list[tuple[float, str]]) -> tuple[float | None, str]:
        before = [s for t, s in changes if t < killed]
        at_kill = before[-1] if before else "?"
        after = [t for t, s in changes if t >= killed and s == "ejected"]
        return ((after[0] - killed) * 1000 if after else None), at_kill

    failed = [c for c in calls if c.status != 200]
    phase_of = {"before": lambda c: c.end < killed, "at": lambda c: c.start <= killed <= c.end,
                "after": lambda c: c.start > killed}  # fmt: skip
    result: dict[str, Any] = {
        "requests": len(calls),
        "failed": len(failed),
        **{f"failed_{k}_kill": sum(1 for c in failed if f(c)) for k, f in phase_of.items()},
        "in_flight_at_kill": sum(1 for c in calls if phase_of["at"](c)),
        "retries": metrics["retries_a"] + metrics["retries_b"],
        **metrics,
    }
    for i in range(len(gateways)):
        ms, state = seen_ms(watched.get(i, []))
        result[f"ejection_seen_gateway{i + 1}_ms"] = ms
        result[f"a_state_at_kill_gateway{i + 1}"] = state
        result[f"a_states_gateway{i + 1}"] = [(round((t - killed) * 1000), s) for t, s in watched.get(i, [])]
    result["failures"] = [f"gateway {c.gateway + 1} {(c.start - killed) * 1000:+.0f} ms: {c.status} {c.detail}"
                          for c in failed[:5]]  # fmt: skip

    def seen(i: int) -> str:
        value, state = result[f"ejection_seen_gateway{i + 1}_ms"], result[f"a_state_at_kill_gateway{i + 1}"]
        shown = "not within 5 s" if value is None else f"{value:.0f} ms"
        return shown if state == "up" else f"{shown} (A was {state} at the kill)"

    _print_table(
        f"2. kill one of two replicas under load: {len(threads)} clients ({clients_per_gateway} per gateway, 2 "
        f"gateways sharing Redis), non-streamed /models/{{id}}, max_new_tokens 8, {duration_s:.0f} s; replica A "
        f"SIGKILLed at {kill_at_s:.0f} s; probe_interval_s {probe_interval_s}",
        ["measure", "value"],
        [
            ["requests sent", str(result["requests"])],
            ["failed (not 200)", str(result["failed"])],
            ["  ended before the kill", str(result["failed_before_kill"])],
            ["  in flight at the kill", str(result["failed_at_kill"])],
            ["  sent after the kill", str(result["failed_after_kill"])],
            ["requests in flight at the kill (client side)", str(result["in_flight_at_kill"])],
            ["attempts sent to A / B (both gateways)", f"{metrics['requests_a']:.0f} / {metrics['requests_b']:.0f}"],
            ["retries onto A / B (both gateways)", f"{metrics['retries_a']:.0f} / {metrics['retries_b']:.0f}"],
            ["max attempts per request (by construction)", "3: 1 failover + 1 re-run of a cut whole answer"],
            [
                "ejections of A / B (both gateways)",
                f"{metrics['ejections_a']:.0f} / {metrics['ejections_b']:.0f}",
            ],
            *[[f"A ejected as seen by gateway {i + 1}", seen(i)] for i in range(len(gateways))],
        ],
    )
    for line in result["failures"]:
        print(f"  failed: {line}")
    return result


# -- 3. prefix affinity ---------------------------------------------------------------------------------------
def _tenant_prompt(tenant: int, chars: int = 1500) -> str:
    rng = random.Random(1000 + tenant)
    name = ["Northwind Freight", "Aurora Clinics", "Basalt Records", "Juniper Schools"][tenant % 4]
    text = f"You are the assistant of {name} (tenant {tenant}). Follow these house notes carefully."
    while len(text) < chars:
        words = rng.sample(WORDS, 9)
        text += f" The {words[0]} of the {words[1]} keeps every {words[2]} near a {words[3]}, and each " \
                f"{words[4]} {words[5]} reports to the {words[6]} {words[7]} before the {words[8]}."  # fmt: skip
    return text


def _workload(requests: int, tenants: int, seed: int) -> list[tuple[int, str]]:
    systems = [_tenant_prompt(t) for t in range(tenants)]
    items = [(r % tenants, r // tenants) for r in range(requests)]
    random.Random(seed).shuffle(items)
    return [(t, f"{systems[t]}\n\nUser: question {q}: what does note {q + 3} say?\nAssistant:") for t, q in items]


def _affinity_run(
    work_dir: Path,
    engines: list[Llama],
    affinity_chars: int,
    work: list[tuple[int, str]],
    concurrency: int,
    probe_interval_s: float,
    affinity_slack: int | None,
) -> dict[str, Any]:
    sub = Processes(work_dir)
    try:
        urls = [e.url for e in engines]
        (gateway,) = sub.gateways(
            [gateway_config(urls, probe_interval_s, affinity_chars, affinity_slack=affinity_slack)]
        )
        for e in engines:  # reset each engine's one-prompt cache to something no tenant shares
            httpx.post(f"{e.url}/v1/completions", timeout=60,
                       json={"model": MODEL_ID, "prompt": f"Reset {uuid.uuid4().hex}", "max_tokens": 1})  # fmt: skip
        marks = [e.log_size() for e in engines]
        todo: queue.Queue[tuple[int, str]] = queue.Queue()
        for item in work:
            todo.put(item)
        ttft: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=gateway.base_url, timeout=120) as http:
                while True:
                    try:
                        _, prompt = todo.get_nowait()
                    except queue.Empty:
                        return
                    body = {"model": MODEL_ID, "prompt": prompt, "max_tokens": 4, "temperature": 0, "stream": True}
                    t0 = time.perf_counter()
                    first = None
                    error = None
                    try:
                        with http.stream("POST", "/v1/completions", json=body) as r:
                            if r.status_code != 200:
                                error = f"{r.status_code} {r.read().decode(errors='replace')[:200]}"
                            for line in r.iter_lines():
                                if first is None and line.startswith("data:") and line[5:].strip() != "[DONE]":
                                    chunk = json.loads(line[5:])
                                    if "error" in chunk:
                                        error = f"error event: {str(chunk['error'])[:200]}"
                                    choices = chunk.get("choices") or []
                                    if choices and choices[0].get("text"):
                                        first = time.perf_counter() - t0
                    except httpx.HTTPError as exc:
                        error = f"{type(exc).__name__}: {exc}"
                    with lock:
                        if error is not None or first is None:
                            failures.append(error or "no text")
                        else:
                            ttft.append(first * 1000)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        wall = time.perf_counter() - started
        per_replica = [_metric_sum(gateway.base_url, "infergate_replica_requests_total", e.url) for e in engines]
        ejections = sum(_metric_sum(gateway.base_url, "infergate_replica_ejections_total", e.url) for e in engines)
        retries = sum(_metric_sum(gateway.base_url, "infergate_replica_retries_total", e.url) for e in engines)
        hits = [h for e, m in zip(engines, marks, strict=True) for h in e.prefix_hits(m)]
    finally:
        sub.stop_all()
    return {
        "affinity_chars": affinity_chars,
        "ttft_p50_ms": _pct(ttft, 50),
        "ttft_p90_ms": _pct(ttft, 90),
        "ttft_mean_ms": sum(ttft) / len(ttft) if ttft else float("nan"),
        "timed": len(ttft),
        "failed": len(failures),
        "failures": failures[:5],
        "per_replica": per_replica,
        "ejections": ejections,
        "retries": retries,
        "prefix_hits_over_200_tokens": sum(1 for h in hits if h > 200),
        "wall_s": wall,
    }


def phase_affinity(
    procs: Processes,
    requests: int,
    tenants: int,
    concurrency: int,
    seed: int,
    probe_interval_s: float,
    affinity_slack: int | None = None,
) -> dict[str, Any]:
    from infergate.engines.remote.replicas import ReplicaSet

    engines = procs.llamas(2)
    work = _workload(requests, tenants, seed)
    runs = [
        _affinity_run(procs.work, engines, chars, work, concurrency, probe_interval_s, affinity_slack)
        for chars in (0, 200)
    ]
    # Which replica each tenant's prefix hashes to (every gateway computes the same).
    chooser = ReplicaSet([e.url for e in engines], eject_s=5.0, affinity_chars=200)
    homes = {}
    for tenant, prompt in work:
        chosen = chooser.choose(prompt, set())
        assert chosen is not None
        homes[tenant] = "AB"[[e.url for e in engines].index(chosen.url)]
    off, on = runs
    result = {
        "requests": requests,
        "tenants": tenants,
        "concurrency": concurrency,
        "probe_interval_s": probe_interval_s,
        "affinity_slack": affinity_slack,
        "off": off,
        "on": on,
        "tenant_homes": "".join(homes[t] for t in sorted(homes)),
        "p50_ratio_off_over_on": off["ttft_p50_ms"] / on["ttft_p50_ms"],
        "p90_ratio_off_over_on": off["ttft_p90_ms"] / on["ttft_p90_ms"],
        "mean_ratio_off_over_on": off["ttft_mean_ms"] / on["ttft_mean_ms"],
    }
    rows = []
    slack = "" if affinity_slack is None else f", affinity_slack = {affinity_slack}"
    for label, run in (("affinity off (power of two choices)", off), (f"affinity_chars = 200{slack}", on)):
        rows.append([
            label, f"{run['ttft_p50_ms']:.0f}", f"{run['ttft_p90_ms']:.0f}", f"{run['ttft_mean_ms']:.0f}",
            f"{run['prefix_hits_over_200_tokens']}", "/".join(f"{n:.0f}" for n in run["per_replica"]),
            f"{run['ejections']:.0f}", f"{run['failed']}", f"{run['wall_s']:.1f}",
        ])  # fmt: skip
    rows.append(["ratio off / on", f"{result['p50_ratio_off_over_on']:.2f}",
                 f"{result['p90_ratio_off_over_on']:.2f}", f"{result['mean_ratio_off_over_on']:.2f}",
                 "", "", "", "", ""])  # fmt: skip
    _print_table(
        f"3. prefix affinity: {requests} streamed /v1/completions (max_tokens 4, greedy) from {tenants} tenants "
        f"(~1,500-char system prompt each), {concurrency} clients, seeded order; probe_interval_s "
        f"{probe_interval_s}; each tenant's replica under affinity: {result['tenant_homes']}",
        ["run", "TTFT p50 ms", "p90 ms", "mean ms", "cache hits", "attempts A/B", "ejections", "failed", "wall s"],
        rows,
    )
    for run in runs:
        for line in run["failures"]:
            print(f"  affinity_chars={run['affinity_chars']} failed: {line}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default="1,2,3", help="which phases to run, e.g. 1,3")
    parser.add_argument("--direct-n", type=int, default=100, help="phase 1: requests of each kind")
    parser.add_argument("--kill-s", type=float, default=20.0, help="phase 2: seconds of load")
    parser.add_argument("--kill-at-s", type=float, default=6.0, help="phase 2: when replica A dies")
    parser.add_argument("--clients-per-gateway", type=int, default=3, help="phase 2")
    parser.add_argument("--affinity-requests", type=int, default=40, help="phase 3")
    parser.add_argument("--tenants", type=int, default=4, help="phase 3")
    parser.add_argument("--concurrency", type=int, default=2, help="phase 3: client threads")
    parser.add_argument(
        "--affinity-slack", type=int, default=None, help="phase 3: [remote] affinity_slack (default: the gateway's, 4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="phase 3: the order of the requests")
    parser.add_argument("--probe-interval-s", type=float, default=0.5, help="the gateways' [remote] probe_interval_s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    phases = {int(p) for p in args.phases.split(",")}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; engines: llama.cpp server (llama-cpp-python), "
          f"SmolLM2-135M-Instruct Q4_1, 1 thread each; everything on 127.0.0.1")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="infergate-remote-bench-"))
    results: dict[str, Any] = {"probe_interval_s": args.probe_interval_s}
    started = time.monotonic()
    for phase in sorted(phases):
        procs = Processes(work)
        t0 = time.monotonic()
        try:
            if phase == 1:
                results["added_latency"] = phase_added(procs, args.direct_n, args.probe_interval_s)
            elif phase == 2:
                results["replica_killed"] = phase_kill(
                    procs, args.kill_s, args.kill_at_s, args.clients_per_gateway, args.probe_interval_s
                )
            elif phase == 3:
                results["prefix_affinity"] = phase_affinity(
                    procs,
                    args.affinity_requests,
                    args.tenants,
                    args.concurrency,
                    args.seed,
                    args.probe_interval_s,
                    args.affinity_slack,
                )
        finally:
            procs.stop_all()
        print(f"  (phase {phase}: {time.monotonic() - t0:.1f} s)")
    results["total_s"] = time.monotonic() - started
    print(f"\ntotal {results['total_s']:.1f} s; engine and gateway logs in {work}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
