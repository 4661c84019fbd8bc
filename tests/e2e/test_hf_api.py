"""The HF task API (`POST /models/{id}`, `POST /`) and TGI's routes (`/generate`, `/info`, `/tokenize`, ...),
called the way users call them: raw HTTP as in the announcement's curl, and `huggingface_hub.InferenceClient`."""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.inference._generated.types import TextGenerationOutput

from tests.support.server import MODEL_ID, Server

PROMPT = "The three primary colors are"
FINISH_REASONS = {"length", "eos_token", "stop_sequence"}
# SmolLM2's own chat format, written by hand: the model answers this one greedily.
CHATML_FRANCE = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n"
)
# The announcement's Llama 2 example: a chat prompt formatted by the caller, which the server must not touch.
LLAMA2_PROMPT = (
    "<s>[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.\n<</SYS>>\n\n"
    "There's a llama in my garden 😱 What should I do? [/INST]"
)


@pytest.fixture
def hub(server: Server) -> InferenceClient:
    """The hub client pointed at the model URL (protocol §6: `C`)."""
    return InferenceClient(model=server.model_url, timeout=120)


def _model_path() -> str:
    return f"/models/{MODEL_ID}"


# -- POST /models/{id}: the HF task API -------------------------------------------------------------------


def test_models_route_answers_a_list_with_the_prompt_by_default(client: httpx.Client) -> None:
    """The legacy API's shape: a one-element list, and `return_full_text` defaults to true."""
    r = client.post(_model_path(), json={"inputs": PROMPT, "parameters": {"max_new_tokens": 5}})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert isinstance(body, list) and len(body) == 1
    assert set(body[0]) == {"generated_text"}, "no details unless asked"
    assert body[0]["generated_text"].startswith(PROMPT)
    assert len(body[0]["generated_text"]) > len(PROMPT)


def test_models_route_return_full_text_false_leaves_the_prompt_out(client: httpx.Client) -> None:
    params = {"max_new_tokens": 5, "return_full_text": False}
    full = client.post(_model_path(), json={"inputs": PROMPT, "parameters": {**params, "return_full_text": True}})
    bare = client.post(_model_path(), json={"inputs": PROMPT, "parameters": params})
    assert full.status_code == bare.status_code == 200
    # Greedy both times: the full text is exactly the prompt plus the bare continuation.
    assert full.json()[0]["generated_text"] == PROMPT + bare.json()[0]["generated_text"]


def test_root_route_via_base_url_matches_the_model_route(server: Server, hub: InferenceClient) -> None:
    """`InferenceClient(base_url=...)` posts to `/`, which serves the default model like `/models/{id}`."""
    base = InferenceClient(base_url=server.base_url, timeout=120)
    via_root = base.text_generation(PROMPT, max_new_tokens=6)
    via_model = hub.text_generation(PROMPT, max_new_tokens=6)
    assert isinstance(via_root, str) and via_root
    assert via_root == via_model


def test_root_route_answers_a_list_with_the_prompt(client: httpx.Client) -> None:
    r = client.post("/", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 3}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["generated_text"].startswith(PROMPT)


def test_generate_answers_a_dict_without_the_prompt(client: httpx.Client) -> None:
    """TGI's `/generate`: a dict, and `return_full_text` defaults to false there."""
    r = client.post("/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 5}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    assert set(body) == {"generated_text"}
    listed = client.post(_model_path(), json={"inputs": PROMPT, "parameters": {"max_new_tokens": 5}}).json()
    assert PROMPT + body["generated_text"] == listed[0]["generated_text"]


def test_generate_details_key_present_only_when_asked(client: httpx.Client) -> None:
    r = client.post("/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "details": True}})
    assert r.status_code == 200
    details = r.json()["details"]
    assert details["finish_reason"] in FINISH_REASONS
    assert details["generated_tokens"] == len(details["tokens"])
    assert "best_of_sequences" not in details, "omitted unless best_of"
    assert "top_tokens" not in details, "omitted when empty"


def test_text_generation_returns_a_str(hub: InferenceClient) -> None:
    out = hub.text_generation("Can you please let us know more details about your ", max_new_tokens=5)
    assert isinstance(out, str) and out


# -- details, top_n_tokens, decoder_input_details, best_of ------------------------------------------------


def test_details_describe_every_generated_token(hub: InferenceClient) -> None:
    out = hub.text_generation(PROMPT, details=True, max_new_tokens=5)
    assert isinstance(out, TextGenerationOutput)
    d = out.details
    assert d is not None
    assert d.finish_reason in FINISH_REASONS
    assert d.generated_tokens == len(d.tokens)
    assert 1 <= d.generated_tokens <= 5
    for token in d.tokens:
        assert isinstance(token.id, int)
        assert isinstance(token.text, str)
        assert isinstance(token.logprob, float) and token.logprob <= 0.0
        assert isinstance(token.special, bool)
    # The tokens' text is the continuation; this route puts the prompt in front (return_full_text defaults true).
    assert out.generated_text == PROMPT + "".join(t.text for t in d.tokens if not t.special)
    assert d.seed is None, "greedy: no seed"


def test_details_finish_reason_length_when_max_new_tokens_reached(client: httpx.Client) -> None:
    r = client.post("/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 3, "details": True}})
    details = r.json()["details"]
    assert details["generated_tokens"] == 3
    assert details["finish_reason"] == "length"
    assert r.headers["x-generated-tokens"] == "3"


@pytest.mark.parametrize("max_new_tokens", [1, 4, 9])
def test_max_new_tokens_is_honoured(hub: InferenceClient, max_new_tokens: int) -> None:
    out = hub.text_generation(PROMPT, details=True, max_new_tokens=max_new_tokens, do_sample=True, seed=7)
    assert out.details is not None
    assert 1 <= out.details.generated_tokens <= max_new_tokens
    assert out.details.generated_tokens == len(out.details.tokens)


def test_top_n_tokens_gives_alternatives_per_step(client: httpx.Client) -> None:
    r = client.post(
        "/generate", json={"inputs": PROMPT, "parameters": {"details": True, "max_new_tokens": 3, "top_n_tokens": 3}}
    )
    assert r.status_code == 200, r.text
    details = r.json()["details"]
    assert len(details["top_tokens"]) == details["generated_tokens"] == len(details["tokens"])
    for chosen, alternatives in zip(details["tokens"], details["top_tokens"], strict=True):
        assert len(alternatives) == 3
        assert all(set(t) >= {"id", "text", "logprob", "special"} for t in alternatives)
        logprobs = [t["logprob"] for t in alternatives]
        assert logprobs == sorted(logprobs, reverse=True), "most likely first"
        # Greedy: the chosen token is the most likely one.
        assert alternatives[0]["id"] == chosen["id"]
        assert alternatives[0]["logprob"] == pytest.approx(chosen["logprob"], abs=1e-4)


def test_top_n_tokens_via_hub_client(hub: InferenceClient) -> None:
    out = hub.text_generation(PROMPT, details=True, max_new_tokens=2, top_n_tokens=2)
    assert out.details is not None and out.details.top_tokens is not None
    assert [len(step) for step in out.details.top_tokens] == [2] * out.details.generated_tokens


def test_decoder_input_details_gives_the_prefill(client: httpx.Client, hub: InferenceClient) -> None:
    out = hub.text_generation(PROMPT, details=True, decoder_input_details=True, max_new_tokens=2)
    d = out.details
    assert d is not None and d.prefill
    assert d.prefill[0].logprob is None, "the first prompt token has no logprob"
    assert all(isinstance(t.logprob, float) and t.logprob <= 0.0 for t in d.prefill[1:])
    ids = [t["id"] for t in client.post("/tokenize", json={"inputs": PROMPT}).json()]
    assert [t.id for t in d.prefill] == ids
    assert "".join(t.text for t in d.prefill) == PROMPT


def test_best_of_two_returns_the_other_sequence(hub: InferenceClient) -> None:
    out = hub.text_generation(PROMPT, best_of=2, do_sample=True, details=True, max_new_tokens=4)
    d = out.details
    assert d is not None
    assert d.best_of_sequences is not None and len(d.best_of_sequences) == 1
    other = d.best_of_sequences[0]
    assert other.finish_reason in FINISH_REASONS
    assert other.generated_tokens == len(other.tokens) <= 4
    assert isinstance(other.generated_text, str)
    # The best sequence is the one with the higher summed logprob.
    assert sum(t.logprob for t in d.tokens) >= sum(t.logprob for t in other.tokens) - 1e-4


def test_best_of_with_return_full_text_prefixes_every_sequence(client: httpx.Client) -> None:
    params = {"best_of": 2, "do_sample": True, "details": True, "max_new_tokens": 3}
    r = client.post(_model_path(), json={"inputs": PROMPT, "parameters": params})
    assert r.status_code == 200, r.text
    body = r.json()[0]
    assert body["generated_text"].startswith(PROMPT)
    assert body["details"]["best_of_sequences"][0]["generated_text"].startswith(PROMPT)


# -- stop sequences, truncate, seeds ----------------------------------------------------------------------


def _greedy(client: httpx.Client, prompt: str, **params: object) -> dict[str, object]:
    r = client.post("/generate", json={"inputs": prompt, "parameters": {"details": True, **params}})
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


@pytest.mark.parametrize("name", ["stop", "stop_sequences"])
def test_stop_sequence_ends_generation(client: httpx.Client, name: str) -> None:
    """A stop word taken from the greedy continuation itself ends it there; the announcement calls the
    parameter `stop_sequences`, TGI `stop`."""
    free = _greedy(client, PROMPT, max_new_tokens=10)
    text = str(free["generated_text"])
    words = text.split()
    assert len(words) >= 2, text
    stop = words[1]
    stopped = _greedy(client, PROMPT, max_new_tokens=10, **{name: [stop]})
    out = str(stopped["generated_text"])
    details = stopped["details"]
    assert isinstance(details, dict)
    assert details["finish_reason"] == "stop_sequence"
    assert out.endswith(stop), "TGI keeps the stop sequence in the text"
    assert out == text[: text.index(stop) + len(stop)]
    assert details["generated_tokens"] < 10


def test_stop_via_hub_client(hub: InferenceClient) -> None:
    free = hub.text_generation(PROMPT, max_new_tokens=10, return_full_text=False)
    stop = free.split()[1]
    out = hub.text_generation(PROMPT, max_new_tokens=10, stop=[stop], details=True)
    assert out.details is not None and out.details.finish_reason == "stop_sequence"
    assert out.generated_text.endswith(stop)


def test_unmatched_stop_sequences_change_nothing(client: httpx.Client) -> None:
    """Stop strings that never appear do not end generation early (the blog's `["<step>", "</s>"]`)."""
    free = _greedy(client, PROMPT, max_new_tokens=6)
    with_stops = _greedy(client, PROMPT, max_new_tokens=6, stop=["<step>", "</s>"])
    assert with_stops["generated_text"] == free["generated_text"]
    assert isinstance(with_stops["details"], dict)
    assert with_stops["details"]["finish_reason"] != "stop_sequence"


def test_truncate_keeps_the_last_prompt_tokens(client: httpx.Client) -> None:
    prompt = "One two three four five six seven eight nine ten"
    tokens = client.post("/tokenize", json={"inputs": prompt}).json()
    assert len(tokens) > 4
    r = client.post(
        "/generate",
        json={"inputs": prompt, "parameters": {"truncate": 3, "max_new_tokens": 2, "decoder_input_details": True}},
    )
    assert r.status_code == 200, r.text
    prefill = r.json()["details"]["prefill"]
    assert [t["id"] for t in prefill] == [t["id"] for t in tokens[-3:]]
    assert r.headers["x-prompt-tokens"] == "3"


def test_truncate_as_large_as_the_prompt_changes_nothing(client: httpx.Client) -> None:
    full = _greedy(client, PROMPT, max_new_tokens=4)
    truncated = _greedy(client, PROMPT, max_new_tokens=4, truncate=100)
    assert truncated["generated_text"] == full["generated_text"]


def test_same_seed_gives_the_same_text(hub: InferenceClient) -> None:
    first = hub.text_generation(PROMPT, do_sample=True, seed=1234, max_new_tokens=10, details=True)
    second = hub.text_generation(PROMPT, do_sample=True, seed=1234, max_new_tokens=10, details=True)
    assert first.details is not None and second.details is not None
    assert first.generated_text == second.generated_text
    assert first.details.seed == second.details.seed == 1234


def test_different_seeds_usually_differ(hub: InferenceClient) -> None:
    outs = {hub.text_generation(PROMPT, do_sample=True, seed=seed, max_new_tokens=10) for seed in (1, 2, 3, 4)}
    assert len(outs) > 1, "four seeds sampled the very same 10 tokens: sampling ignores the seed"


def test_sampling_without_seed_reports_the_seed_it_used(client: httpx.Client) -> None:
    """details.seed lets a caller reproduce a sampled answer."""
    first = _greedy(client, PROMPT, do_sample=True, max_new_tokens=8)
    details = first["details"]
    assert isinstance(details, dict) and isinstance(details["seed"], int)
    again = _greedy(client, PROMPT, do_sample=True, max_new_tokens=8, seed=details["seed"])
    assert again["generated_text"] == first["generated_text"]


# -- old clients and hand-written prompts -----------------------------------------------------------------


def test_old_client_body_with_nulls_answers_a_list(client: httpx.Client) -> None:
    """hf_hub 0.17-0.22 send every parameter, with nulls for unset ones (protocol §1.10, §6 case 8)."""
    body = {
        "inputs": PROMPT,
        "parameters": {
            "best_of": None,
            "decoder_input_details": False,
            "details": False,
            "do_sample": False,
            "max_new_tokens": 20,
            "repetition_penalty": None,
            "return_full_text": False,
            "seed": None,
            "stop": [],
            "temperature": None,
            "top_k": None,
            "top_p": None,
            "truncate": None,
            "typical_p": None,
            "watermark": False,
        },
        "stream": False,
    }
    r = client.post(_model_path(), json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert isinstance(out, list) and len(out) == 1
    assert set(out[0]) == {"generated_text"}
    assert not out[0]["generated_text"].startswith(PROMPT), "return_full_text: false"
    assert 0 < int(r.headers["x-generated-tokens"]) <= 20
    # Greedy (do_sample false, nulls = absent): the same as the plain request.
    plain = client.post("/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 20}}).json()
    assert out[0]["generated_text"] == plain["generated_text"]


def test_hand_written_llama2_prompt_passes_untouched(client: httpx.Client, hub: InferenceClient) -> None:
    """The announcement formats a Llama 2 chat prompt itself; the server must neither template nor alter it."""
    out = hub.text_generation(LLAMA2_PROMPT, max_new_tokens=5, return_full_text=True)
    assert out.startswith(LLAMA2_PROMPT)
    assert len(out) > len(LLAMA2_PROMPT)
    r = client.post(
        _model_path(), json={"inputs": LLAMA2_PROMPT, "parameters": {"max_new_tokens": 1, "return_full_text": True}}
    )
    assert r.status_code == 200
    # The model saw exactly the prompt's own tokens: no chat template, no extra BOS.
    tokens = client.post("/tokenize", json={"inputs": LLAMA2_PROMPT}).json()
    assert r.headers["x-prompt-tokens"] == str(len(tokens))
    assert r.headers["x-compute-characters"] == str(len(LLAMA2_PROMPT))


def test_greedy_chat_prompt_knows_the_capital_of_france(hub: InferenceClient) -> None:
    out = hub.text_generation(CHATML_FRANCE, max_new_tokens=12)
    assert "Paris" in out


# -- headers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"/models/{MODEL_ID}", "/", "/generate"])
def test_inference_responses_carry_compute_headers(client: httpx.Client, path: str) -> None:
    r = client.post(path, json={"inputs": PROMPT, "parameters": {"max_new_tokens": 4, "details": True}})
    assert r.status_code == 200, r.text
    assert r.headers["x-compute-type"] in {"cpu", "gpu"}
    assert float(r.headers["x-compute-time"]) > 0
    assert r.headers["x-compute-characters"] == str(len(PROMPT))
    tokens = client.post("/tokenize", json={"inputs": PROMPT}).json()
    assert r.headers["x-prompt-tokens"] == str(len(tokens))
    body = r.json()
    details = (body[0] if isinstance(body, list) else body)["details"]
    assert r.headers["x-generated-tokens"] == str(details["generated_tokens"])


# -- /info, health, tokenize, model list, auth -------------------------------------------------------------


def test_info_describes_the_model(client: httpx.Client) -> None:
    r = client.get("/info")
    assert r.status_code == 200
    info = r.json()
    assert info["model_id"] == MODEL_ID
    assert info["max_best_of"] == 2
    assert info["max_stop_sequences"] == 4
    assert info["max_total_tokens"] == 8192
    assert 0 < info["max_input_tokens"] < info["max_total_tokens"]
    assert isinstance(info["version"], str) and info["version"]
    for key in ("max_concurrent_requests", "validation_workers", "max_client_batch_size", "router"):
        assert key in info


def test_hub_client_endpoint_info_and_health(server: Server, client: httpx.Client) -> None:
    """Protocol §1.9 / §6 case 28: these helpers need provider="hf-inference" and hit `{url}/info`, `{url}/health`."""
    on_model = InferenceClient(server.model_url, provider="hf-inference")
    assert on_model.health_check() is True
    info = on_model.get_endpoint_info()
    assert info["model_id"] == MODEL_ID
    assert info == client.get("/info").json()
    on_root = InferenceClient(server.base_url, provider="hf-inference")
    assert on_root.health_check() is True
    assert on_root.get_endpoint_info()["model_id"] == MODEL_ID


def test_model_health_route(client: httpx.Client) -> None:
    assert client.get(f"/models/{MODEL_ID}/health").status_code == 200
    assert client.get("/health").status_code == 200


def test_model_health_for_an_unknown_model_is_404(client: httpx.Client) -> None:
    r = client.get("/models/nobody/nothing/health")
    assert r.status_code == 404
    assert "nobody/nothing" in r.json()["error"]


def test_tokenize_gives_ids_and_offsets_into_the_text(client: httpx.Client) -> None:
    text = "Hello world, héllo 😱 again!"
    r = client.post("/tokenize", json={"inputs": text})
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert isinstance(tokens, list) and tokens
    covered = 0
    for token in tokens:
        assert set(token) >= {"id", "text", "start", "stop"}
        assert isinstance(token["id"], int)
        assert 0 <= token["start"] < token["stop"] <= len(text)
        assert text[token["start"] : token["stop"]] == token["text"]
        # No gaps; a character split over several byte-level tokens (the emoji) is shared by them.
        assert token["start"] <= covered
        covered = max(covered, token["stop"])
    assert covered == len(text)


def test_v1_models_lists_the_model(client: httpx.Client) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    entries = [m for m in body["data"] if m["id"] == MODEL_ID]
    assert len(entries) == 1
    assert entries[0]["object"] == "model"
