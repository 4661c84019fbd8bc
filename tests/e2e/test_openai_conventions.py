"""OpenAI's own conventions on the `/v1/` routes, as its SDK and the servers people switch from (vLLM) have them:
token-id prompts, `echo` with the prompt's logprobs, `max_tokens: 0`, `top_logprobs` up to 20, 400
`invalid_request_error` bodies that name the parameter, and unknown fields refused. Called with the `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient

from tests.support.server import MODEL_ID, Server

PROMPT = "The three primary colors are"
FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
EMBED_ID = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def oai(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{server.base_url}/v1",
        api_key=server.token,
        max_retries=0,
        timeout=120,
        default_headers={"x-use-cache": "0"},
    ) as c:
        yield c


def token_ids(client: httpx.Client, text: str) -> list[int]:
    return [t["id"] for t in client.post("/tokenize", json={"inputs": text}).json()]


def bad_request(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The call fails as OpenAI's do for a bad parameter: the SDK raises BadRequestError on a 400 whose body is
    `{"error": {"message", "type": "invalid_request_error", "param", "code"}}`; returns that error object."""
    with pytest.raises(openai.BadRequestError) as caught:
        call(*args, **kwargs)
    assert caught.value.status_code == 400
    error = caught.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["message"] in str(caught.value), "the SDK shows the server's message"
    assert not error["message"].startswith("Input validation error"), "TGI's prefix stays on TGI's routes"
    return dict(error)


# -- token-id prompts ------------------------------------------------------------------------------------


def test_a_prompt_of_token_ids_gives_what_its_text_gives(oai: openai.OpenAI, client: httpx.Client) -> None:
    ids = token_ids(client, PROMPT)
    by_text = oai.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=6, temperature=0)
    by_ids = oai.completions.create(model=MODEL_ID, prompt=ids, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == len(ids)
    # A list of token-id lists is a list of prompts (lm-eval sends its batches so).
    two = oai.completions.create(
        model=MODEL_ID, prompt=[ids, token_ids(client, "One, two,")], max_tokens=6, temperature=0
    )
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].text == by_text.choices[0].text
    # Echoed, token ids come back as their text.
    echoed = oai.completions.create(model=MODEL_ID, prompt=ids, max_tokens=2, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith(PROMPT)


def test_token_ids_run_as_sent_not_retokenized(oai: openai.OpenAI, client: httpx.Client) -> None:
    """ "The" sent as the two tokens "T" + "he": the engine runs those two tokens, where the text "The" would be one."""
    split = token_ids(client, "T") + token_ids(client, "he")
    assert len(token_ids(client, "The")) == 1 and len(split) == 2
    out = oai.completions.create(model=MODEL_ID, prompt=split, max_tokens=1, temperature=0, echo=True, logprobs=0)
    assert out.usage is not None and out.usage.prompt_tokens == 2
    assert out.choices[0].logprobs is not None
    assert out.choices[0].logprobs.tokens is not None and out.choices[0].logprobs.tokens[:2] == ["T", "he"]
    assert out.choices[0].text.startswith("The")


def test_token_ids_outside_the_vocabulary_are_a_400_naming_prompt(oai: openai.OpenAI) -> None:
    error = bad_request(oai.completions.create, model=MODEL_ID, prompt=[1, 10**9], max_tokens=2)
    assert error["param"] == "prompt" and "1000000000" in error["message"]


# -- echo with logprobs, max_tokens 0 --------------------------------------------------------------------


def test_echo_logprobs_give_the_prompt_tokens_then_the_generated_ones(oai: openai.OpenAI, client: httpx.Client) -> None:
    out = oai.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=3, temperature=0, echo=True, logprobs=2)
    choice = out.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    ids = token_ids(client, PROMPT)
    n = len(ids)
    assert len(lp.tokens) == n + 3
    assert "".join(lp.tokens[:n]) == PROMPT
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None, "the first token has no context"
    assert all(isinstance(x, float) and x <= 0 for x in lp.token_logprobs[1:])
    # The offsets locate every token in the returned text.
    assert choice.text.startswith(PROMPT)
    for token, offset in zip(lp.tokens, lp.text_offset, strict=True):
        assert choice.text[offset : offset + len(token)] == token
    # The prompt tokens' alternatives: the two most likely, plus the token itself (as vLLM gives them).
    for token, logprob, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True):
        assert top is not None and 2 <= len(top) <= 3 and top[token] == pytest.approx(logprob)
        assert max(top.values()) >= logprob
    # The same logprobs as TGI's decoder_input_details give for the prompt.
    tgi = client.post(
        "/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 1, "decoder_input_details": True}}
    ).json()
    prefill = [t["logprob"] for t in tgi["details"]["prefill"]]
    assert prefill[0] is None
    assert lp.token_logprobs[1:n] == pytest.approx(prefill[1:], abs=1e-4)
    plain = oai.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=2)
    assert choice.text == PROMPT + plain.choices[0].text


def test_max_tokens_zero_with_echo_scores_the_prompt_only(oai: openai.OpenAI, client: httpx.Client) -> None:
    out = oai.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1, temperature=0)
    ids = token_ids(client, PROMPT)
    choice = out.choices[0]
    assert choice.text == PROMPT
    assert choice.finish_reason == "length"
    assert choice.logprobs is not None and choice.logprobs.token_logprobs is not None
    assert len(choice.logprobs.token_logprobs) == len(ids)
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(ids), 0)
    with_one = oai.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=1, echo=True, logprobs=1, temperature=0)
    assert with_one.choices[0].logprobs is not None and with_one.choices[0].logprobs.token_logprobs is not None
    assert choice.logprobs.token_logprobs == with_one.choices[0].logprobs.token_logprobs[:-1]
    # Streamed: the prompt, then the end.
    chunks = list(
        oai.completions.create(model=MODEL_ID, prompt=ids, max_tokens=0, echo=True, stream=True, temperature=0)
    )
    assert "".join(c.choices[0].text for c in chunks) == PROMPT
    assert chunks[-1].choices[0].finish_reason == "length"
    # Without echo there is nothing to answer.
    error = bad_request(oai.completions.create, model=MODEL_ID, prompt=PROMPT, max_tokens=0)
    assert error["param"] == "max_tokens"


# -- top_logprobs ----------------------------------------------------------------------------------------


def test_chat_top_logprobs_up_to_twenty(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(
        model=MODEL_ID, messages=FRANCE, max_tokens=2, temperature=0, logprobs=True, top_logprobs=20
    )
    content = out.choices[0].logprobs.content if out.choices[0].logprobs else None
    assert content and all(len(entry.top_logprobs) == 20 for entry in content)
    error = bad_request(
        oai.chat.completions.create, model=MODEL_ID, messages=FRANCE, max_tokens=2, logprobs=True, top_logprobs=21
    )
    assert error["param"] == "top_logprobs"
    error = bad_request(oai.completions.create, model=MODEL_ID, prompt=PROMPT, max_tokens=2, logprobs=6)
    assert error["param"] == "logprobs"


# -- errors: 400 invalid_request_error with the parameter ------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 3.0}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 9}, "n"),
        ({"stop": list("abcde")}, "stop"),
        ({"logit_bias": {"hello": 1}}, "logit_bias"),
        ({"max_tokens": 100_000}, "max_tokens"),  # beyond the context: the engine's check, in OpenAI's words
        ({"messages": [{"role": "nobody", "content": "hi"}]}, "messages[0].role"),
    ],
)
def test_a_bad_value_is_a_400_naming_the_parameter(oai: openai.OpenAI, kwargs: dict[str, Any], param: str) -> None:
    args = {"model": MODEL_ID, "messages": FRANCE, "max_tokens": 2, **kwargs}
    error = bad_request(oai.chat.completions.create, **args)
    assert error["param"] == param
    assert error["code"] is None


def test_the_model_chat_route_answers_openai_errors_too(server: Server) -> None:
    with openai.OpenAI(base_url=f"{server.model_url}/v1", api_key=server.token, max_retries=0) as c:
        error = bad_request(c.chat.completions.create, model="dummy", messages=FRANCE, temperature=-1)
    assert error["param"] == "temperature"


def test_other_errors_keep_their_status_with_openai_types(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="nobody/no-such-model", messages=FRANCE, max_tokens=2)
    error = caught.value.response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "model_not_found")


def test_tgi_routes_keep_their_422(client: httpx.Client) -> None:
    r = client.post("/generate", json={"inputs": PROMPT, "parameters": {"temperature": -1}})
    assert r.status_code == 422
    assert r.json()["error_type"] == "validation"


def test_a_stream_error_is_an_openai_error_event(client: httpx.Client) -> None:
    body = {"model": MODEL_ID, "messages": FRANCE, "max_tokens": 100_000, "stream": True}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, "a request the engine refuses fails before the stream starts"
    assert r.json()["error"]["param"] == "max_tokens"


# -- unknown and unsupported fields ----------------------------------------------------------------------


def test_unknown_fields_are_refused_naming_them(oai: openai.OpenAI) -> None:
    error = bad_request(
        oai.chat.completions.create, model=MODEL_ID, messages=FRANCE, max_tokens=2, extra_body={"foo": 1, "bar": 2}
    )
    assert error["message"] == "Unrecognized request argument supplied: foo, bar"
    assert error["param"] == "foo"
    error = bad_request(
        oai.completions.create, model=MODEL_ID, prompt=PROMPT, max_tokens=2, extra_body={"tempreature": 0}
    )
    assert error["message"] == "Unrecognized request argument supplied: tempreature"
    error = bad_request(oai.embeddings.create, model=EMBED_ID, input="hi", extra_body={"normalise": True})
    assert error["param"] == "normalise"


def test_every_field_the_sdk_sends_is_known(oai: openai.OpenAI) -> None:
    """OpenAI's whole chat request, and vLLM's extensions: accepted (the bookkeeping ones without effect)."""
    out = oai.chat.completions.create(
        model=MODEL_ID,
        messages=FRANCE,
        max_completion_tokens=4,
        frequency_penalty=0.0,
        presence_penalty=0.0,
        logit_bias={"0": 0},
        logprobs=True,
        top_logprobs=1,
        n=1,
        response_format={"type": "text"},
        seed=1,
        service_tier="auto",
        stop=["\n\n"],
        temperature=0,
        top_p=1,
        tool_choice="none",
        user="someone",
        metadata={"suite": "conventions"},
        store=False,
        modalities=["text"],
        prediction={"type": "content", "content": "Paris"},
        parallel_tool_calls=False,
        extra_body={"top_k": 5, "min_p": 0.0, "repetition_penalty": 1.0, "ignore_eos": False},
    )
    assert out.choices[0].message.content
    completion = oai.completions.create(
        model=MODEL_ID, prompt=PROMPT, max_tokens=2, temperature=0, user="someone", best_of=1, suffix=None
    )
    assert completion.choices[0].text


def test_hub_chat_completion_with_its_parameters(server: Server) -> None:
    """huggingface_hub sends `tool_prompt`, `tool_choice`, `stream`, ... (null fields left out)."""
    hub = InferenceClient(model=server.model_url, timeout=120)
    out = hub.chat_completion(
        FRANCE,
        max_tokens=4,
        temperature=0,
        seed=1,
        top_p=0.9,
        frequency_penalty=0.1,
        presence_penalty=0.1,
        logprobs=True,
        top_logprobs=2,
        stop=["\n\n"],
        stream_options=None,
        extra_body={"top_k": 10},
    )
    assert out.choices[0].message.content


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
    ],
)
def test_fields_the_server_cannot_honour_are_a_400_saying_so(
    oai: openai.OpenAI, kwargs: dict[str, Any], param: str
) -> None:
    error = bad_request(oai.chat.completions.create, model=MODEL_ID, messages=FRANCE, max_tokens=2, **kwargs)
    assert error["param"] == param
    assert f"`{param}` is not supported by this server" in error["message"]


def test_embeddings_accept_openai_fields(server: Server) -> None:
    with openai.OpenAI(
        base_url=f"{server.base_url}/v1",
        api_key=server.token,
        max_retries=0,
        timeout=120,
        default_headers={"x-wait-for-model": "true"},
    ) as c:
        out = c.embeddings.create(model=EMBED_ID, input=["a cat"], encoding_format="float", dimensions=8, user="me")
        assert len(out.data[0].embedding) == 8
        error = bad_request(c.embeddings.create, model=EMBED_ID, input="a cat", encoding_format="float", dimensions=0)
    assert error["param"] == "dimensions"


def test_error_bodies_on_raw_http(client: httpx.Client) -> None:
    r = client.post("/v1/completions", json={"model": MODEL_ID, "prompt": PROMPT, "temperature": "hot"})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["param"] == "temperature" and body["error"]["type"] == "invalid_request_error"
    assert json.dumps(body["error"]["code"]) == "null"


def test_alternatives_filtered_out_by_sampling_are_reported_at_vllms_floor(oai: openai.OpenAI) -> None:
    """top_k=1 leaves one token with any probability: the other 19 alternatives have a logprob of -inf, which
    JSON cannot carry (this was a 500); they come back at -9999.0, as vLLM reports them."""
    chat = oai.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        logprobs=True,
        top_logprobs=20,
        extra_body={"top_k": 1},
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content[0].top_logprobs) == 20
    floors = [t.logprob for t in content[0].top_logprobs if t.logprob == -9999.0]
    assert len(floors) >= 1
