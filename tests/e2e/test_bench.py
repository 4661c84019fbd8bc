"""A small run of `infergate bench engine` (the benchmark is not a test; this checks that it runs and reports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KEYS = {"engine_tok_s", "hf_serial_tok_s", "hf_static_tok_s", "ttft_p50_s", "device"}


def bench(*args: str) -> tuple[list[str], dict[str, object]]:
    cmd = [sys.executable, "-m", "infergate", "bench", "engine", "--streams", "2", "--new-tokens", "3"]
    out = subprocess.run([*cmd, "--serial-requests", "1", "--json", *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    return lines, json.loads(lines[-1])


# The packaged model's runs (llama.cpp, and `--runner torch`) are the README's commands: test_readme.py runs them.
@pytest.mark.parametrize("args", [("--config-shape", "smollm2-135m")], ids=["shape"])
def test_bench_engine_prints_a_table_and_a_json_line(args: tuple[str, ...]) -> None:
    lines, result = bench(*args)
    assert KEYS <= result.keys()
    assert result["device"] == "cpu"
    assert isinstance(result["engine_tok_s"], float) and result["engine_tok_s"] > 0
    assert isinstance(result["hf_static_tok_s"], float) and result["hf_static_tok_s"] > 0
    header = next(i for i, line in enumerate(lines) if line.startswith("how"))
    names = [line.split("  ")[0] for line in lines[header + 1 : header + 6]]
    assert names[:2] == ["engine, 1 stream(s)", "engine, 2 stream(s)"]
    assert any(n.startswith("generate(), static batch of 2") for n in names)


def test_bench_engine_refuses_a_gpu_run_without_a_model_to_run() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "infergate", "bench", "engine", "--device", "cuda"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--config-shape" in out.stderr
