"""Virtual environments of their own for clients whose pins clash with the test venv (huggingface_hub < 1 for
`text-generation`, < 2 for `langchain-huggingface`): ``<repo>/.venv-NAME``, installed from
``tests/clients/NAME/requirements.txt`` when missing or when that file changed, then used to run
``tests/clients/NAME/run.py`` in a subprocess that prints JSON."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
INSTALL_TIMEOUT_S = 900


def client_python(name: str) -> Path:
    """The Python of ``.venv-NAME``, created and installed first if missing or stale."""
    requirements = HERE / name / "requirements.txt"
    venv = REPO / f".venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements-sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    if install.returncode != 0:
        raise RuntimeError(f"installing {requirements} into {venv} failed:\n{install.stderr[-4000:]}")
    stamp.write_text(digest)
    return python


def client_env() -> dict[str, str]:
    """The test process's environment without any Hugging Face, OpenAI or LangSmith setting, so that no token
    from the developer's shell reaches the server (clients send HF_TOKEN to any URL) and nothing is traced.
    (Not HF_HUB_OFFLINE: huggingface_hub 1.x then refuses every URL, loopback included.)"""
    prefixes = ("HF_", "HUGGING_FACE_", "HUGGINGFACE", "OPENAI_", "LANGCHAIN_", "LANGSMITH_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k != "PYTHONPATH"}


def run_client_script(name: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``tests/clients/NAME/run.py ARGS`` with the client's own Python; return the JSON it prints last."""
    python = client_python(name)
    env = client_env()
    env["HF_HOME"] = str(REPO / f".venv-{name}" / "hf-home")  # no token file of the developer's either
    done = subprocess.run(
        [str(python), str(HERE / name / "run.py"), *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name}/run.py failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
