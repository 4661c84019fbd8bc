"""The gateway's own cost: cache hits of an authenticated, rate-limited request through infergate, against a
bare FastAPI endpoint returning the same bytes, both under `wrk` with 16 connections on loopback.

    .venv/bin/python bench/gateway_overhead.py [--duration 10] [--connections 16]

Needs `wrk` (Debian: `apt-get install wrk`). Starts both servers itself, bounded in time, and stops them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

BODY = '{"inputs": "The capital of France is", "parameters": {"max_new_tokens": 8}}'
# Access logs off on both sides: the comparison is of request handling, not of writing log lines.
CONFIG = """
[server]
access_log = false

[tiers.enterprise]
requests = 100000000
window = 300
concurrent = 1024
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode})")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def _wrk(url: str, headers: dict[str, str], duration: int, connections: int, workdir: Path) -> tuple[float, float]:
    """Requests/s and median latency (ms) of POSTing BODY."""
    script = workdir / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = [[{BODY}]]", 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    assert p50 is not None, out
    value, unit = float(p50.group(1)), p50.group(2)
    return rps, value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="infergate-gw-bench-"))
    (work / "config.toml").write_text(CONFIG)
    env = {**os.environ, "INFERGATE_HOME": str(work)}
    cli = [sys.executable, "-m", "infergate", "--config", str(work / "config.toml")]
    port, bare_port = _free_port(), _free_port()
    gateway = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    bare = None
    try:
        _wait(f"http://127.0.0.1:{port}/health", gateway)
        subprocess.run([*cli, "users", "create", "bench", "--tier", "enterprise"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        token = subprocess.run([*cli, "tokens", "create", "bench"], env=env, check=True, capture_output=True,
                               text=True).stdout.strip().splitlines()[-1]  # fmt: skip
        url = f"http://127.0.0.1:{port}/models/HuggingFaceTB/SmolLM2-135M-Instruct"
        headers = {"Authorization": f"Bearer {token}"}
        first = httpx.post(url, content=BODY, headers={**headers, "content-type": "application/json"}, timeout=60)
        first.raise_for_status()
        again = httpx.post(url, content=BODY, headers={**headers, "content-type": "application/json"}, timeout=60)
        assert again.headers["x-compute-type"] == "cache", again.headers
        (work / "bare.py").write_text(
            textwrap.dedent(f"""
            from fastapi import FastAPI, Request
            from fastapi.responses import Response
            app = FastAPI()
            BODY = {again.content!r}
            @app.post("/models/{{model_id:path}}")
            async def model(model_id: str, request: Request) -> Response:
                await request.body()
                return Response(BODY, media_type="application/json")
            @app.get("/health")
            async def health() -> dict[str, str]:
                return {{}}
        """)
        )
        bare = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bare:app", "--port", str(bare_port), "--log-level", "warning"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(f"http://127.0.0.1:{bare_port}/health", bare)
        g_rps, g_p50 = _wrk(url, headers, args.duration, args.connections, work)
        b_rps, b_p50 = _wrk(url.replace(str(port), str(bare_port)), headers, args.duration, args.connections, work)
    finally:
        for proc in (gateway, bare):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, POST of a cached text generation, loopback, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'endpoint':<44}{'req/s':>10}{'p50 ms':>10}")
    print(f"{'bare FastAPI, same body':<44}{b_rps:>10.0f}{b_p50:>10.2f}")
    print(f"{'infergate: auth + limits + cache hit':<44}{g_rps:>10.0f}{g_p50:>10.2f}")
    print(f"{'ratio / added latency at p50':<44}{g_rps / b_rps:>10.2f}{g_p50 - b_p50:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
