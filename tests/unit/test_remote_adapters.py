"""The sans-IO parts of remote engines: what each backend is sent, how its events read, and which replica is
chosen. (Against real engines: tests/e2e/test_remote.py.)"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from infergate.core.errors import ValidationError
from infergate.core.params import SamplingParams, StoppingParams
from infergate.core.requests import GenerationRequest
from infergate.engines.remote import openai_wire, tgi_wire
from infergate.engines.remote.engine import _StopTrim
from infergate.engines.remote.replicas import ReplicaSet


def test_openai_body_carries_every_parameter_by_its_engine_name() -> None:
    request = GenerationRequest(
        "Hi",
        SamplingParams(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, min_p=0.1, repetition_penalty=1.2, seed=3),
        StoppingParams(max_new_tokens=7, stop=("\n",)),
        top_n_tokens=3,
    )
    path, body = openai_wire.build_generation(request, "served-name")
    assert path == "/v1/completions"
    assert body["model"] == "served-name" and body["prompt"] == "Hi" and body["stream"] is True
    assert (body["max_tokens"], body["temperature"], body["top_k"], body["top_p"], body["min_p"]) == (
        7,
        0.7,
        5,
        0.9,
        0.1,
    )
    assert body["repetition_penalty"] == body["repeat_penalty"] == 1.2
    assert (body["seed"], body["stop"], body["logprobs"]) == (3, ["\n"], 3)


def test_greedy_is_temperature_zero_and_a_chat_goes_to_the_chat_route() -> None:
    messages = ({"role": "user", "content": "Hello"},)
    path, body = openai_wire.build_generation(GenerationRequest("", messages=messages), "m")
    assert path == "/v1/chat/completions" and body["messages"] == list(messages)
    assert body["temperature"] == 0.0 and "logprobs" not in body  # asked for only with top_n_tokens


def test_openai_cannot_stream_prompt_logprobs() -> None:
    with pytest.raises(ValidationError, match="decoder_input_details"):
        openai_wire.build_generation(GenerationRequest("x", prefill_details=True), "m")


def test_tgi_refuses_what_it_cannot_apply_by_name() -> None:
    request = GenerationRequest("x", SamplingParams(min_p=0.2, presence_penalty=0.5))
    with pytest.raises(ValidationError, match="min_p, presence_penalty"):
        tgi_wire.build_generation(request, "")


def test_tgi_body_and_path() -> None:
    request = GenerationRequest("x", stopping=StoppingParams(max_new_tokens=4), top_n_tokens=2)
    path, body = tgi_wire.build_generation(request, "/models/a/b")
    assert path == "/models/a/b/generate_stream"
    assert body["parameters"]["details"] is True and body["parameters"]["top_n_tokens"] == 2
    path, _ = tgi_wire.build_generation(GenerationRequest("x", prefill_details=True), "")
    assert path == "/generate"  # TGI returns prompt details only without streaming


def test_completion_chunk_splits_into_tokens_and_maps_the_finish_reason() -> None:
    logprobs = {
        "tokens": [" Paris", "."],
        "token_logprobs": [-0.1, -0.2],
        "top_logprobs": [{" Paris": -0.1}, {".": -0.2}],
    }
    chunk = {"choices": [{"text": " Paris.", "finish_reason": "stop", "stop_reason": None, "logprobs": logprobs}]}
    pieces = openai_wire.parse_chunk(chunk, ())
    assert [p.text for p in pieces] == [" Paris", "."]
    assert pieces[-1].finish_reason == "eos_token" and pieces[0].finish_reason is None
    assert pieces[0].token is not None and pieces[0].token.logprob == -0.1
    vllm_stop = {"choices": [{"text": "", "finish_reason": "stop", "stop_reason": "\n"}]}
    assert openai_wire.parse_chunk(vllm_stop, ("\n",))[-1].finish_reason == "stop_sequence"
    usage = openai_wire.parse_chunk({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}, ())
    assert usage[0].prompt_tokens == 5 and usage[0].token is None and usage[0].cached_tokens is None
    cached = {"prompt_tokens": 90, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 64}}
    assert openai_wire.parse_chunk({"choices": [], "usage": cached}, ())[0].cached_tokens == 64  # vLLM, infergate


def test_chat_chunk_logprobs() -> None:
    top = [{"token": "Hi", "logprob": -0.5}]
    logprobs = {"content": [{"token": "Hi", "logprob": -0.5, "top_logprobs": top}]}
    chunk = {"choices": [{"delta": {"content": "Hi"}, "finish_reason": None, "logprobs": logprobs}]}
    (piece,) = openai_wire.parse_chunk(chunk, ())
    assert piece.text == "Hi" and piece.token is not None and piece.token.logprob == -0.5 and len(piece.top) == 1


def test_tgi_event_with_special_eos_adds_no_text() -> None:
    details = {"finish_reason": "eos_token", "generated_tokens": 3, "input_length": 4}
    event = {"index": 3, "token": {"id": 2, "text": "</s>", "logprob": -0.1, "special": True},
             "generated_text": "abc", "details": details}  # fmt: skip
    piece = tgi_wire.parse_event(event)
    assert piece.text == "" and piece.finish_reason == "eos_token" and piece.prompt_tokens == 4


def test_stop_trim_cuts_the_stop_sequence_tgi_keeps() -> None:
    trim = _StopTrim(["END"])
    out = trim.feed("Hello E", None) + trim.feed("N", None) + trim.feed("D", "stop_sequence")
    assert out == "Hello "


def test_power_of_two_choices_prefers_the_less_loaded_and_skips_ejected() -> None:
    replicas = ReplicaSet(["http://a", "http://b", "http://c"], eject_s=5)
    a, b, c = replicas.replicas
    a.in_flight, b.in_flight, c.in_flight = 10, 0, 10
    picks = Counter(replicas.choose("p", set()).url for _ in range(300))  # type: ignore[union-attr]
    assert picks["http://b"] > 150  # b wins every draw it is in (2/3 of draws)
    replicas.eject(b, "boom")
    assert all(replicas.choose("p", set()).url != "http://b" for _ in range(50))  # type: ignore[union-attr]
    assert replicas.choose("p", {"http://a", "http://c"}) is None
    replicas.restore(b)
    assert replicas.choose("p", {"http://a", "http://c"}) is b


def test_affinity_sticks_to_one_replica_until_it_is_loaded() -> None:
    replicas = ReplicaSet(["http://a", "http://b"], eject_s=5, affinity_chars=8, affinity_slack=2)
    prefix = "You are a helpful assistant. "
    first = replicas.choose(prefix + "one", set())
    assert first is not None
    assert all(replicas.choose(prefix + str(i), set()) is first for i in range(20))
    first.in_flight = 5  # more than the other + slack: affinity lets go
    assert all(replicas.choose(prefix + str(i), set()) is not first for i in range(20))


def test_cooling_is_not_a_failure() -> None:
    replicas = ReplicaSet(["http://a"], eject_s=5)
    (a,) = replicas.replicas
    replicas.cool(a, "HTTP 429", 0.2)
    assert a.errors == 0 and a.state(time.monotonic()) == "cooling"
    time.sleep(0.25)
    assert replicas.choose("p", set()) is a
