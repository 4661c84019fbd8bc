"""Measure the server as a user sees it: startup to ready, one stream's speed, concurrent streams, memory.

    .venv/bin/python bench/http_baseline.py [--new-tokens 64] [--json]

Starts `infergate serve` on a free port with the default model, calls it over HTTP on loopback, prints a
table, and stops the server. Every request is bounded (count and max_new_tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from infergate.benchmarks.engine import free_port, rss_mb, wait_healthy

PROMPT = "Count from one to five hundred: one, two, three,"  # keeps going to max_new_tokens


def _generate(base: str, new_tokens: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = httpx.post(
        f"{base}/generate",
        json={"inputs": PROMPT, "parameters": {"max_new_tokens": new_tokens, "details": True}},
        timeout=600,
    )
    r.raise_for_status()
    return r.json()["details"]["generated_tokens"], time.perf_counter() - t0


def _ttft(base: str) -> float:
    t0 = time.perf_counter()
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 4}}
    with httpx.stream("POST", f"{base}/generate_stream", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                return time.perf_counter() - t0
    raise RuntimeError("no event")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = tempfile.mkdtemp(prefix="infergate-bench-")
    env = {**os.environ, "INFERGATE_HOME": home}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infergate", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(proc, base, "run `infergate serve` by hand to see why")
        startup = time.perf_counter() - t0
        rss_ready = rss_mb(proc.pid, "VmRSS")
        _generate(base, 8)  # warm-up
        rows: list[tuple[str, float, float]] = []
        ttfts = [_ttft(base) for _ in range(5)]
        for streams in (1, 4, 8):
            runs = []
            for _ in range(2 if streams > 1 else 3):
                w0 = time.perf_counter()
                with ThreadPoolExecutor(streams) as pool:
                    results = list(pool.map(lambda _: _generate(base, args.new_tokens), range(streams)))
                wall = time.perf_counter() - w0
                runs.append(sum(n for n, _ in results) / wall)
            rows.append((f"{streams} concurrent stream(s)", statistics.median(runs), wall))
        peak = rss_mb(proc.pid, "VmHWM")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model: default (SmolLM2-135M, float32)")
    print(f"{'measure':<34}{'value':>12}")
    print(f"{'startup to /health 200 (s)':<34}{startup:>12.1f}")
    print(f"{'time to first token p50 (s)':<34}{statistics.median(ttfts):>12.3f}")
    for name, tok_s, _ in rows:
        print(f"{name + ' (tok/s)':<34}{tok_s:>12.1f}")
    print(f"{'resident memory when ready (MB)':<34}{rss_ready:>12.0f}")
    print(f"{'peak resident memory (MB)':<34}{peak:>12.0f}")
    if args.json:
        print(
            json.dumps(
                {
                    "startup_s": startup,
                    "ttft_p50_s": statistics.median(ttfts),
                    "tok_s": {name: v for name, v, _ in rows},
                    "rss_ready_mb": rss_ready,
                    "rss_peak_mb": peak,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
