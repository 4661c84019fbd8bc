"""Every command the README shows, run as a newcomer runs it after `make serve`'s install alone.

The environment is `.venv-runtime`, made by `make install` (the install `make serve` runs) and so holding the
runtime dependencies only: a command that imports a package only the test extras bring fails here. The
server is `make serve` itself. Commands are read from the README, so a new one is tested as soon as it is
written; the few that cannot run here are listed in SKIPPED with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / ".venv-runtime"
README = (ROOT / "README.md").read_text()
README_URL = "http://127.0.0.1:8000"

# Commands that cannot run on this machine as written, and why. Matched against the start of the command.
SKIPPED = {
    "make serve": "the fixture runs it (on a free port)",
    "make test": "this test runs inside it",
    "make install": "the fixture runs it",
    "export INFERGATE_DATABASE_URL=": "an example for the reader's own database host",
    "export INFERGATE_REDIS_URL=": "an example for the reader's own Redis host",
    "infergate serve": "the fixture's `make serve` is the server",
    "infergate bench ...": "not a command: the README's name for the bench commands",
}
NEEDS_GPU = "--device cuda"
# A tiny size for the benchmark (the README's sizes take minutes; the bench is measured in bench/, not here).
BENCH_SIZE = ("--streams 16 --new-tokens 64", "--streams 2 --new-tokens 3 --serial-requests 1")


@dataclass
class Served:
    base_url: str
    home: Path
    env: dict[str, str]
    token: str = ""


def _blocks(language: str) -> list[str]:
    """The README's fenced blocks of ``language`` ("" for a bare fence), in order."""
    blocks: list[str] = []
    current: list[str] | None = None
    opened = ""
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current, opened = [], line[3:].strip()
            else:
                if opened == language:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def sh_commands() -> list[str]:
    """Each command of the README's shell blocks, continuation lines joined and comments dropped."""
    commands = []
    for block in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def inline_commands() -> list[str]:
    """Commands named in the README's prose: `infergate ...` and `.venv/bin/infergate ...` in backticks, in the
    README's order (it creates a user before that user's token)."""
    return list(dict.fromkeys(re.findall(r"`((?:\.venv/bin/)?infergate [a-z][^`]*)`", README)))


def skip_reason(command: str) -> str | None:
    plain = command.removeprefix(".venv/bin/")
    for start, reason in SKIPPED.items():
        if plain.startswith(start):
            return reason
    if NEEDS_GPU in command and not Path("/dev/nvidiactl").exists():
        return "needs a GPU"
    return None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`make install` into .venv-runtime (nothing to do once installed), then `make serve` on a free port."""
    install = subprocess.run(
        ["make", "-s", "install", f"VENV={RUNTIME}"], cwd=ROOT, capture_output=True, text=True, timeout=3600
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    home = tmp_path_factory.mktemp("readme")
    port = free_port()
    (home / "config.toml").write_text(f"[server]\nport = {port}\n")  # so the CLI's `models list` finds it
    env = {
        "PATH": f"{RUNTIME}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "INFERGATE_HOME": str(home),
        "INFERGATE_CONFIG": str(home / "config.toml"),
        "PYTHONUNBUFFERED": "1",
    }
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        ["make", "serve", f"VENV={RUNTIME}", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # `make` and the server it starts are stopped together
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, (home / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (home / "serve.log").read_text()[-3000:]
            time.sleep(0.2)
        yield Served(base, home, env)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
        log.close()


def _run(served: Served, command: str, python: str | None = None, timeout: float = 600) -> str:
    """Run one README command (shell) or snippet (python) with the README's placeholders filled in."""
    command = command.replace(README_URL, served.base_url).replace(".venv/bin/", f"{RUNTIME}/bin/")
    command = command.replace("<THE TOKEN>", served.token).replace('"ig_..."', json.dumps(served.token))
    args = [python, "-c", command] if python else ["bash", "-c", command]
    out = subprocess.run(args, env=served.env, capture_output=True, text=True, timeout=timeout, cwd=served.home)
    assert out.returncode == 0, f"{command}\nexited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def check_bench(out: str, runner: str) -> None:
    """The benchmark's table and JSON line (at a tiny size: it runs, it reports; speeds are for bench/)."""
    lines = out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["device"] == "cpu" and result["runner"] == runner
    for key in ("engine_tok_s", "hf_serial_tok_s", "hf_static_tok_s"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert "ttft_p50_s" in result
    header = next(i for i, line in enumerate(lines) if line.startswith("how"))
    names = [line.split("  ")[0] for line in lines[header + 1 : header + 6]]
    assert names[:2] == ["engine, 1 stream(s)", "engine, 2 stream(s)"]
    if runner == "llama.cpp":  # llama.cpp's own runs are the yardsticks of the packaged GGUF on a CPU
        assert result["llamacpp_single_tok_s"] > 0 and result["llamacpp_batched_tok_s"] > 0
        assert any(line.startswith("llama.cpp batched decode, 2") for line in lines)


def test_the_readme_shows_commands_this_test_finds() -> None:
    """A guard against the parser going blind: the README's known commands are all found."""
    found = sh_commands() + inline_commands()
    for expected in ("make serve", "curl ", ".venv/bin/infergate tokens create", "infergate bench engine"):
        assert any(expected in c for c in found), expected
    assert len(_blocks("python")) >= 3


def test_every_shell_command_runs(served: Served) -> None:
    ran = []
    for command in sh_commands():
        if skip_reason(command) is not None:
            continue
        if "bench engine" in command:
            command = command.replace(*BENCH_SIZE)
            if "--streams" not in command:
                command += " " + BENCH_SIZE[1]
            command += " --json"  # the README: "add --json for one JSON line"
        out = _run(served, command)
        if "bench engine" in command:
            check_bench(out, runner="torch" if "--runner torch" in command else "llama.cpp")
        if command.startswith("curl"):
            answer = json.loads(out)
            assert "error" not in answer, (command, answer)
        if "tokens create" in command:
            served.token = out.strip().splitlines()[-1]  # the README: "prints the token once, alone on the last line"
            assert served.token.startswith("ig_")
        ran.append(command)
    assert any("gemma-3-270m" in c for c in ran) and any("bench engine" in c for c in ran)


def test_every_python_snippet_runs(served: Served) -> None:
    if not served.token:
        cli = f"{RUNTIME}/bin/infergate"
        created = _run(served, f"{cli} users create snippets --tier pro && {cli} tokens create snippets")
        served.token = created.strip().splitlines()[-1]
    for snippet in _blocks("python"):
        # The README asks for `pip install openai` before its openai example: that one runs with the test tools.
        python = sys.executable if "from openai" in snippet else f"{RUNTIME}/bin/python"
        out = _run(served, snippet, python=python)
        assert out.strip(), snippet


def test_every_command_named_in_the_prose_runs(served: Served) -> None:
    cli = f"{RUNTIME}/bin/infergate"
    token = _run(served, f"{cli} users create alice --tier free || true; {cli} tokens create alice")
    token = token.strip().splitlines()[-1]
    # Whole placeholders only, the token last: a random token may contain "ID" (it once did).
    fill = {
        r"\bID\b": "HuggingFaceTB/SmolLM2-135M-Instruct",
        re.escape("[alice]"): "alice",
        re.escape("<token or its prefix>"): token,
    }
    commands = [c for c in inline_commands() if skip_reason(c) is None]
    # Revoking goes last: it is the one that takes something away.
    commands.sort(key=lambda c: "revoke" in c)
    for command in commands:
        for placeholder, value in fill.items():
            command = re.sub(placeholder, lambda _, v=value: shlex.quote(v), command)
        assert not re.search(r"<|\[|\b[A-Z]{2,}\b", command), f"fill in the README placeholder of: {command}"
        _run(served, command)
