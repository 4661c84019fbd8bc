"""The Python clients users already have, unchanged, against infergate (issue 11): TGI's own `text-generation`
client and `langchain-huggingface` (each in a venv of its own, see tests/clients/venvs.py), `langchain-openai` and
LiteLLM (in the test venv, tests/clients/requirements.txt), the request bodies of the VS Code extension llm-vscode
(llm-ls) and of chat-ui's OpenAI endpoint replayed with httpx, and what the huggingface_hub suites left out.

Most clients get `server.token` as their key (placeholder keys and Hub tokens, served as anonymous, are tested in
test_foreign_tokens.py; chat-ui's default "sk-" here). No HF_TOKEN from the environment reaches a client (the
subprocesses get an environment without it; in-process clients get an explicit key). The embedding model loads on
first use; `embedder` makes sure it is loaded with a plain request (which waits for the load)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient

from tests.clients.venvs import run_client_script
from tests.support.server import MODEL_ID, Server

EMBED_ID = "sentence-transformers/all-MiniLM-L6-v2"
PROMPT = "The capital of France is"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
TGI_FINISH_REASONS = {"length", "eos_token", "stop_sequence"}


@pytest.fixture(autouse=True)
def no_hub_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def embedder(server: Server) -> Server:
    """The embedding model, loaded: it loads on its first request, which waits for it."""
    r = httpx.post(f"{server.base_url}/models/{EMBED_ID}", json={"inputs": "warm up"}, timeout=300)
    assert r.status_code == 200, r.text
    return server


def auth(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


# -- text-generation 0.7.0, TGI's own client (.venv-tgi) --------------------------------------------------------


@pytest.fixture(scope="module")
def tgi(server: Server) -> dict[str, Any]:
    """What tests/clients/tgi/run.py got from `Client` and `AsyncClient` on `{base}/models/{id}` and `{base}`."""
    return run_client_script("tgi", server.base_url, MODEL_ID, server.token)


def _ok(results: dict[str, Any], case: str) -> Any:
    out = results[case]
    assert not (isinstance(out, dict) and "error" in out), f"{case}: {out}"
    return out


def test_tgi_generate_returns_details_of_every_token(tgi: dict[str, Any]) -> None:
    out = _ok(tgi, "generate")
    details = out["details"]
    assert details["finish_reason"] in TGI_FINISH_REASONS
    assert details["generated_tokens"] == len(details["tokens"]) <= 6
    assert details["prefill"] == [] and details["seed"] is None
    assert out["generated_text"] == "".join(t["text"] for t in details["tokens"] if not t["special"])
    assert not out["generated_text"].startswith(PROMPT), "the client sends return_full_text: false"


def test_tgi_generate_stop_sequences(tgi: dict[str, Any]) -> None:
    out = _ok(tgi, "generate_stop")
    assert out["details"]["finish_reason"] == "stop_sequence"
    assert out["generated_text"].endswith(".")


def test_tgi_generate_seeded_sampling_repeats(tgi: dict[str, Any]) -> None:
    first, second = _ok(tgi, "generate_seeded")
    assert first["generated_text"] == second["generated_text"]
    assert first["details"]["seed"] == 7


def test_tgi_generate_best_of_two(tgi: dict[str, Any]) -> None:
    out = _ok(tgi, "generate_best_of")
    others = out["details"]["best_of_sequences"]
    assert isinstance(others, list) and len(others) == 1
    assert others[0]["finish_reason"] in TGI_FINISH_REASONS and isinstance(others[0]["generated_text"], str)


def test_tgi_generate_prefill_and_top_tokens(tgi: dict[str, Any]) -> None:
    details = _ok(tgi, "generate_prefill_top_tokens")["details"]
    assert [t["text"] for t in details["prefill"]][:2] == ["The", " capital"]
    assert details["prefill"][0]["logprob"] is None
    assert len(details["top_tokens"]) == details["generated_tokens"]
    assert all(len(step) == 2 for step in details["top_tokens"])


def test_tgi_root_url_and_full_text(tgi: dict[str, Any]) -> None:
    out = _ok(tgi, "root_generate")
    assert out["generated_text"].startswith(PROMPT) and len(out["generated_text"]) > len(PROMPT)


def test_tgi_validation_error_is_the_clients_validation_error(tgi: dict[str, Any]) -> None:
    assert tgi["generate_invalid"]["error"].startswith("ValidationError: Input validation error: `top_n_tokens`")


def test_tgi_generate_stream(tgi: dict[str, Any]) -> None:
    events = _ok(tgi, "generate_stream")
    assert 1 <= len(events) <= 6
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    last = events[-1]
    assert last["details"]["finish_reason"] in TGI_FINISH_REASONS
    assert last["details"]["generated_tokens"] == len(events)
    assert last["generated_text"] == "".join(e["token"]["text"] for e in events if not e["token"]["special"])


def test_tgi_async_client(tgi: dict[str, Any]) -> None:
    out = _ok(tgi, "async")
    assert out["generate"]["generated_text"]
    assert out["stream"][-1]["generated_text"] == out["generate"]["generated_text"], "greedy: the same text"


def test_tgi_chat(tgi: dict[str, Any]) -> None:
    """text-generation's ChatComplete requires `system_fingerprint` to be a string (TGI sends '<version>-native')."""
    out = _ok(tgi, "chat")
    assert out["choices"][0]["message"]["content"]
    assert out["model"] == "tgi" or out["model"] == MODEL_ID


def test_tgi_chat_stream_is_broken_in_the_client(tgi: dict[str, Any]) -> None:
    """Client bugs no server can work around: it reads `resp.status` of a `requests` response when a chunk fails
    to parse (its ChoiceDelta requires `tool_calls`), and json-parses `data: [DONE]`, which TGI itself sends."""
    assert "error" in tgi["chat_stream"]


# -- langchain-huggingface 1.2.3 (.venv-langchain-hf) ----------------------------------------------------------


@pytest.fixture(scope="module")
def langchain_hf(embedder: Server) -> dict[str, Any]:
    """What tests/clients/langchain-hf/run.py got from HuggingFaceEndpoint, ChatHuggingFace and the embeddings."""
    return run_client_script("langchain-hf", embedder.base_url, MODEL_ID, EMBED_ID)


def test_langchain_hf_endpoint_invoke_and_stream(langchain_hf: dict[str, Any]) -> None:
    assert isinstance(_ok(langchain_hf, "llm_invoke"), str) and langchain_hf["llm_invoke"]
    chunks = _ok(langchain_hf, "llm_stream")
    assert 1 <= len(chunks) <= 8 and all(isinstance(c, str) for c in chunks)


def test_langchain_hf_endpoint_cuts_its_stop_sequence(langchain_hf: dict[str, Any]) -> None:
    assert _ok(langchain_hf, "llm_invoke_greedy_stop") == " Paris"


def test_langchain_chat_huggingface_invoke_and_stream(langchain_hf: dict[str, Any]) -> None:
    message = _ok(langchain_hf, "chat_invoke")
    assert message["content"] and message["usage_metadata"]["output_tokens"] <= 8
    assert message["response_metadata"]["finish_reason"] in {"stop", "length"}
    chunks = _ok(langchain_hf, "chat_stream")
    assert "".join(c["content"] for c in chunks)
    assert [c["usage_metadata"]["output_tokens"] for c in chunks if c["usage_metadata"]] != [], "stream_usage"


def test_langchain_hf_embeddings_need_their_client_replaced(langchain_hf: dict[str, Any]) -> None:
    """`HuggingFaceEndpointEmbeddings` refuses a URL; with its `client` swapped for one on the URL it works."""
    assert "must be a HuggingFace repo ID, not a URL" in langchain_hf["embeddings_url"]["error"]
    out = _ok(langchain_hf, "embeddings_replaced_client")
    assert np.array(out["documents"]).shape == (2, 384)
    assert np.allclose(out["query"], out["documents"][0], atol=1e-5)


# -- langchain-openai (test venv) ------------------------------------------------------------------------------


def test_langchain_openai_chat_invoke_and_stream(server: Server) -> None:
    langchain_openai = pytest.importorskip("langchain_openai", reason="pip install -r tests/clients/requirements.txt")
    chat = langchain_openai.ChatOpenAI(
        model=MODEL_ID, base_url=f"{server.base_url}/v1", api_key=server.token, max_tokens=8, temperature=0
    )
    message = chat.invoke(QUESTION[0]["content"])  # sends max_completion_tokens, not max_tokens
    assert isinstance(message.content, str) and "Paris" in message.content
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] <= 8
    streaming = langchain_openai.ChatOpenAI(
        model=MODEL_ID,
        base_url=f"{server.base_url}/v1",
        api_key=server.token,
        max_tokens=8,
        temperature=0,
        stream_usage=True,
    )
    chunks = list(streaming.stream(QUESTION[0]["content"]))
    assert "".join(str(c.content) for c in chunks) == message.content, "greedy: the same answer streamed"
    streamed_usage = [c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata]
    assert streamed_usage == [message.usage_metadata["output_tokens"]]


def test_langchain_openai_embeddings(embedder: Server) -> None:
    """check_embedding_ctx_length=False is needed: otherwise the client tokenizes with tiktoken (which downloads
    its encoding from the internet) and sends OpenAI token ids, which mean nothing to another model."""
    langchain_openai = pytest.importorskip("langchain_openai", reason="pip install -r tests/clients/requirements.txt")
    embeddings = langchain_openai.OpenAIEmbeddings(
        model=EMBED_ID, base_url=f"{embedder.base_url}/v1", api_key=embedder.token, check_embedding_ctx_length=False
    )
    documents = embeddings.embed_documents(["a cat", "a kitten", "a car"])  # sends encoding_format: base64
    assert np.array(documents).shape == (3, 384)
    query = np.array(embeddings.embed_query("a cat"))
    assert np.allclose(query, documents[0], atol=1e-5)
    assert query @ documents[1] > query @ documents[2]


# -- LiteLLM as a library (test venv) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> Iterator[Any]:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # else it downloads a cost map at import
    try:
        yield pytest.importorskip("litellm", reason="pip install -r tests/clients/requirements.txt")
    finally:
        os.environ.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)


# litellm builds pydantic schemas of ReadOnly TypedDicts on its first calls, which warns (pytest makes it an error).
LITELLM_WARNINGS = pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning")


@LITELLM_WARNINGS
@pytest.mark.parametrize("provider", ["huggingface", "openai"])
def test_litellm_completion_and_stream(litellm: Any, server: Server, provider: str) -> None:
    # huggingface/: POST {api_base}/v1/chat/completions; openai/: the openai SDK on {api_base}/chat/completions.
    api_base = f"{server.base_url}/models/{MODEL_ID}" if provider == "huggingface" else f"{server.base_url}/v1"
    call = {"model": f"{provider}/{MODEL_ID}", "api_base": api_base, "api_key": server.token, "messages": QUESTION}
    out = litellm.completion(**call, max_tokens=8, temperature=0)
    content = out.choices[0].message.content
    assert "Paris" in content and out.usage.completion_tokens <= 8
    chunks = list(litellm.completion(**call, max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes[-1] in {"stop", "length"}


@LITELLM_WARNINGS
def test_litellm_text_completion_and_embeddings(litellm: Any, embedder: Server) -> None:
    base, key = embedder.base_url, embedder.token
    text = litellm.text_completion(
        model=f"openai/{MODEL_ID}", api_base=f"{base}/v1", api_key=key, prompt=PROMPT, max_tokens=4, temperature=0
    )
    assert text.choices[0].text.startswith(" Paris")
    vectors = litellm.embedding(model=f"openai/{EMBED_ID}", api_base=f"{base}/v1", api_key=key, input=["a", "b"])
    assert [len(d["embedding"]) for d in vectors.data] == [384, 384]
    # huggingface/ asks the Hub for the model's task unless input_type says it, and sends any model whose name has
    # "sentence-transformers" as sentence-similarity: the "embeddings" are the first input's similarity to the rest.
    similarity = litellm.embedding(
        model=f"huggingface/{EMBED_ID}",
        api_base=f"{base}/models/{EMBED_ID}",
        api_key=key,
        input=["a cat", "a kitten", "a car"],
        input_type="feature-extraction",
    )
    scores = [d["embedding"] for d in similarity.data]
    assert len(scores) == 2 and scores[0] > scores[1]


# -- llm-vscode's request bodies (huggingface/llm-ls backend.rs build_body, build_url, parse_*_text) -------------

LLM_LS_HEADERS = {"user-agent": "llm-ls/0.5.3; rust/unknown; ide/VSCode"}
# llm-vscode's default `llm.requestBody`, to which llm-ls adds `inputs` and `parameters.return_full_text: false`.
LLM_VSCODE_PARAMETERS = {"max_new_tokens": 60, "temperature": 0.2, "top_p": 0.95}
FIM_PROMPT = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n    return c<fim_middle>"


def _llm_ls_body(parameters: dict[str, Any]) -> dict[str, Any]:
    return {"parameters": {**parameters, "return_full_text": False}, "inputs": FIM_PROMPT}


def test_llm_vscode_huggingface_backend(server: Server) -> None:
    """`backend: huggingface, url: BASE`: POST BASE/models/{modelId}; llm-ls takes a generation or a list of them."""
    r = httpx.post(
        f"{server.base_url}/models/{MODEL_ID}",
        json=_llm_ls_body(LLM_VSCODE_PARAMETERS),
        headers={**LLM_LS_HEADERS, **auth(server)},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    generations = r.json() if isinstance(r.json(), list) else [r.json()]
    assert all(isinstance(g["generated_text"], str) for g in generations)
    assert not generations[0]["generated_text"].startswith("<fim_prefix>")


def test_llm_vscode_tgi_backend_needs_a_single_generation(server: Server) -> None:
    """`backend: tgi, url: BASE`: POST BASE/generate; llm-ls refuses a list there (InvalidBackend)."""
    r = httpx.post(
        f"{server.base_url}/generate",
        json=_llm_ls_body({**LLM_VSCODE_PARAMETERS, "max_new_tokens": 8}),
        headers={**LLM_LS_HEADERS, **auth(server)},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), dict) and isinstance(r.json()["generated_text"], str)


def _llm_ls_openai(server: Server, body: dict[str, Any]) -> httpx.Response:
    """What llm-ls's openai backend sends: POST BASE/v1/completions with its headers."""
    headers = {**LLM_LS_HEADERS, **auth(server)}
    return httpx.post(f"{server.base_url}/v1/completions", json=body, headers=headers, timeout=120)


def test_llm_vscode_openai_backend(server: Server) -> None:
    """`backend: openai, url: BASE`: POST BASE/v1/completions with the user's requestBody plus prompt, model and
    stream: false; llm-ls reads choices[].text."""
    body = {
        "max_tokens": 8,
        "temperature": 0.2,
        "top_p": 0.95,
        "prompt": FIM_PROMPT,
        "model": MODEL_ID,
        "stream": False,
    }
    r = _llm_ls_openai(server, body)
    assert r.status_code == 200, r.text
    assert [isinstance(c["text"], str) for c in r.json()["choices"]] == [True]


def test_llm_vscode_openai_backend_with_the_default_request_body(server: Server) -> None:
    """llm-vscode's default requestBody is the HF backend's (`parameters` with TGI's names); switched to the
    openai backend it is sent as it is, beside prompt, model and stream: TGI's names are read as OpenAI's."""
    body = {
        "parameters": {**LLM_VSCODE_PARAMETERS, "max_new_tokens": 4, "return_full_text": False},
        "prompt": FIM_PROMPT,
        "model": MODEL_ID,
        "stream": False,
    }
    r = _llm_ls_openai(server, body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["usage"]["completion_tokens"] <= 4  # max_new_tokens, not OpenAI's default of 16
    assert not answer["choices"][0]["text"].startswith(FIM_PROMPT)  # return_full_text: false


# -- chat-ui's `openai` endpoint (huggingface/chat-ui src/lib/server/endpoints/openai/endpointOai.ts) -----------


def _chat_ui_headers(server: Server) -> dict[str, str]:
    # The openai JS SDK's headers plus chat-ui's own; the key is OPENAI_API_KEY, "sk-" unless the user set one
    # (served as anonymous: it is not an infergate token).
    return {
        "Authorization": "Bearer sk-",
        "user-agent": "OpenAI/JS 4.104.0",
        "x-stainless-lang": "js",
        "x-stainless-retry-count": "0",
        "ChatUI-Conversation-ID": "6710f6a1c2b1d3e4f5a6b7c8",
        "X-use-cache": "false",
    }


def _sse_json(r: httpx.Response) -> list[dict[str, Any]]:
    """The JSON events of an OpenAI stream as the openai JS SDK reads them, up to `data: [DONE]`."""
    assert r.status_code == 200, r.read()
    assert r.headers["content-type"].startswith("text/event-stream")
    events = []
    for line in r.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return events
        events.append(json.loads(data))
    raise AssertionError("the stream ended without data: [DONE]")


def _chat_ui_generated_text(texts: list[tuple[str, str | None]]) -> str | None:
    """openAI*ToTextGenerationStream: the text is complete on the event whose finish_reason is stop or length."""
    generated = ""
    for text, finish in texts:
        generated += text
        if finish in ("stop", "length"):
            return generated
    return None


def test_chat_ui_lists_the_models(server: Server) -> None:
    r = httpx.get(f"{server.base_url}/v1/models", headers=auth(server), timeout=30)
    assert r.status_code == 200
    assert MODEL_ID in [m["id"] for m in r.json()["data"] if isinstance(m["id"], str)]


def test_chat_ui_chat_completions_stream(server: Server) -> None:
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "system", "content": "You are a concise assistant."}, *QUESTION],
        "stream": True,
        "max_tokens": 8,
        "stop": ["<|im_end|>"],
        "temperature": 0.1,
        "top_p": 0.95,
        "frequency_penalty": 0,
        "presence_penalty": 0,
    }
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, headers=_chat_ui_headers(server), timeout=120
    ) as r:
        events = _sse_json(r)
    texts = [
        (e["choices"][0]["delta"].get("content") or "", e["choices"][0]["finish_reason"])
        for e in events
        if e["choices"]
    ]
    assert _chat_ui_generated_text(texts)


def test_chat_ui_chat_completions_without_streaming(server: Server) -> None:
    """`streamingSupported: false` and `useCompletionTokens: true`."""
    body = {"model": MODEL_ID, "messages": QUESTION, "stream": False, "max_completion_tokens": 8, "temperature": 0.1}
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=_chat_ui_headers(server), timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


def test_chat_ui_completions_stream(server: Server) -> None:
    """`completion: "completions"`: chat-ui renders the prompt itself ([SYSTEM]/[USER] sections)."""
    body = {
        "model": MODEL_ID,
        "prompt": "[USER]\nWhat is the capital of France?\n[ASSISTANT]\n",
        "stream": True,
        "max_tokens": 8,
        "stop": ["[USER]"],
        "temperature": 0.1,
        "top_p": 0.95,
    }
    with httpx.stream(
        "POST", f"{server.base_url}/v1/completions", json=body, headers=_chat_ui_headers(server), timeout=120
    ) as r:
        events = _sse_json(r)
    texts = [(e["choices"][0]["text"], e["choices"][0]["finish_reason"]) for e in events if e["choices"]]
    assert _chat_ui_generated_text(texts)


# -- huggingface_hub 2.x: what the other suites leave out ------------------------------------------------------


def test_hub_async_client(embedder: Server) -> None:
    """AsyncInferenceClient (generated from the sync client, same bodies, aiter_lines): text_generation streamed
    with details, chat_completion streamed with usage, feature_extraction and sentence_similarity with no
    x-wait-for-model header (the model is loaded)."""
    base, token = embedder.base_url, embedder.token

    async def run() -> tuple[list[Any], list[Any], Any, list[float]]:
        chat_model = AsyncInferenceClient(model=f"{base}/models/{MODEL_ID}", token=token, timeout=120)
        tokens = [
            t async for t in await chat_model.text_generation(PROMPT, max_new_tokens=4, stream=True, details=True)
        ]
        chunks = [
            c
            async for c in await chat_model.chat_completion(
                QUESTION, max_tokens=4, stream=True, stream_options={"include_usage": True}
            )
        ]
        embedding_model = AsyncInferenceClient(model=f"{base}/models/{EMBED_ID}", token=token, timeout=120)
        vectors = await embedding_model.feature_extraction(["a cat", "a dog"])
        scores = await embedding_model.sentence_similarity("a cat", other_sentences=["a kitten", "a car"])
        return tokens, chunks, vectors, scores

    tokens, chunks, vectors, scores = asyncio.run(run())
    assert tokens[-1].details.finish_reason in TGI_FINISH_REASONS and tokens[-1].details.generated_tokens == len(tokens)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 4
    assert vectors.shape == (2, 384)
    assert len(scores) == 2 and scores[0] > scores[1]


def test_hub_openai_style_chat_on_a_v1_base_url(server: Server) -> None:
    """`InferenceClient(base_url=".../v1", api_key=...).chat.completions.create(...)`, the OpenAI-style alias the
    hub documents for drop-in use: POST /v1/chat/completions with the model named in the body."""
    client = InferenceClient(base_url=f"{server.base_url}/v1", api_key=server.token, timeout=120)
    out = client.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=6, temperature=0)
    assert out.model == MODEL_ID and out.choices[0].message.content
    chunks = list(
        client.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=6, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == out.choices[0].message.content


def test_langchain_openai_structured_output_and_tools(server: Server) -> None:
    """LangChain's `with_structured_output` (a json_schema response_format) and `bind_tools` with a forced tool."""
    langchain_openai = pytest.importorskip("langchain_openai", reason="pip install -r tests/clients/requirements.txt")
    from pydantic import BaseModel, Field

    class Capital(BaseModel):
        city: str = Field(max_length=30)
        country: str = Field(max_length=30)

    chat = langchain_openai.ChatOpenAI(
        model=MODEL_ID, base_url=f"{server.base_url}/v1", api_key=server.token, max_tokens=80, temperature=0
    )
    answer = chat.with_structured_output(Capital, method="json_schema").invoke(QUESTION[0]["content"])
    assert isinstance(answer, Capital)

    def get_population(city: str) -> int:
        """The number of people living in a city."""
        return 0

    forced = chat.bind_tools([get_population], tool_choice="get_population", parallel_tool_calls=False)
    called = forced.invoke("How many people live in Rome?")
    assert [c["name"] for c in called.tool_calls] == ["get_population"]
    assert isinstance(called.tool_calls[0]["args"]["city"], str)
