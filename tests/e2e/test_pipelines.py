"""The hub's other text tasks (fill-mask, text/token classification, zero-shot, question answering,
summarization, translation, text2text), called with `InferenceClient`'s task methods. No real model of these
tasks ships as a package, so each is a tiny random model built from a config, saved to a directory and loaded
by the server through its ordinary path: answers are random but must be well-formed, honour the parameters,
and point into the inputs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from infergate.core.tasks import PIPELINE_TASKS
from tests.support.server import CHAT_MODEL_LAZY_OPEN_ANONYMOUS, Server, serving
from tests.support.tiny_models import WORDS, build

TASKS = sorted(PIPELINE_TASKS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    models = tmp_path_factory.mktemp("tiny-models")
    config = CHAT_MODEL_LAZY_OPEN_ANONYMOUS
    for task in TASKS:
        config += f'\n[[models]]\nid = "tiny/{task}"\ntask = "{task}"\nsource = "{build(task, models / task)}"\n'
    yield from serving(tmp_path_factory.mktemp("pipelines"), config)


def hub(server: Server, task: str) -> InferenceClient:
    # The models load on first use: wait for them rather than get a 503.
    headers = {"x-wait-for-model": "true", "x-use-cache": "0"}
    return InferenceClient(model=f"{server.base_url}/models/tiny/{task}", timeout=120, headers=headers)


def post(server: Server, task: str, body: Any) -> httpx.Response:
    headers = {"x-wait-for-model": "true", "x-use-cache": "0"}
    return httpx.post(f"{server.base_url}/models/tiny/{task}", json=body, headers=headers, timeout=120)


def test_fill_mask(server: Server) -> None:
    out = hub(server, "fill-mask").fill_mask("Paris is the [MASK] of France.", top_k=3)
    assert len(out) == 3
    assert [o.score for o in out] == sorted((o.score for o in out), reverse=True)
    for o in out:
        assert o.token_str in WORDS
        assert o.sequence == f"paris is the {o.token_str} of france."
    with pytest.raises(HfHubHTTPError) as no_mask:
        hub(server, "fill-mask").fill_mask("There is no mask here.")
    assert no_mask.value.response.status_code == 400
    assert "No mask_token ([MASK]) found on the input" in no_mask.value.response.json()["error"]


def test_text_classification_is_a_nested_list_the_client_unwraps(server: Server) -> None:
    raw = post(server, "text-classification", {"inputs": "I like you"})
    assert isinstance(raw.json(), list) and isinstance(raw.json()[0], list)  # protocol §1.3: [[...]]
    out = hub(server, "text-classification").text_classification("I like you")
    assert sorted(o.label for o in out) == ["NEGATIVE", "POSITIVE"]
    assert sum(o.score for o in out) == pytest.approx(1.0, abs=1e-5)
    top = hub(server, "text-classification").text_classification("I like you", top_k=1)
    assert len(top) == 1 and top[0].label == max(out, key=lambda o: o.score).label


def test_token_classification_spans_point_into_the_text(server: Server) -> None:
    text = "My name is Sarah and I live in London"
    grouped = hub(server, "token-classification").token_classification(text)
    assert grouped, "a random model still labels some tokens"
    for entity in grouped:
        assert entity.entity_group in {"O", "PER", "LOC"}
        assert text[entity.start : entity.end].lower() == entity.word
    raw = hub(server, "token-classification").token_classification(text, aggregation_strategy="none")  # type: ignore[arg-type]
    assert all(e.entity in {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"} for e in raw)


def test_zero_shot_classification(server: Server) -> None:
    client = hub(server, "zero-shot-classification")
    labels = ["good", "bad", "weather"]
    single = client.zero_shot_classification("it was great", candidate_labels=labels)
    assert sorted(o.label for o in single) == sorted(labels)
    assert sum(o.score for o in single) == pytest.approx(1.0, abs=1e-5)  # one label is true: softmax
    multi = client.zero_shot_classification("it was great", candidate_labels=labels, multi_label=True)
    assert all(0 < o.score < 1 for o in multi)
    missing = post(server, "zero-shot-classification", {"inputs": "it was great"})
    assert missing.status_code == 422
    assert "`parameters.candidate_labels` must be a non-empty list of strings" in missing.json()["error"]


def test_question_answering_answers_with_a_span_of_the_context(server: Server) -> None:
    context = "I live in Paris and I like the food"
    client = hub(server, "question-answering")
    answer = client.question_answering(question="Where do I live?", context=context)
    assert 0 <= answer.start < answer.end <= len(context)  # type: ignore[union-attr]
    assert context[answer.start : answer.end] == answer.answer  # type: ignore[union-attr]
    several = client.question_answering(question="Where do I live?", context=context, top_k=3)
    assert isinstance(several, list) and len(several) == 3
    assert [a.score for a in several] == sorted((a.score for a in several), reverse=True)
    bad = post(server, "question-answering", {"inputs": {"question": "Where?"}})
    assert bad.status_code == 422 and "`inputs.context` must be a string" in bad.json()["error"]


def test_summarization_translation_and_text2text_generate_bounded_text(server: Server) -> None:
    text = "The weather was sunny today and the food was great"
    summary = hub(server, "summarization").summarization(text, generate_parameters={"max_new_tokens": 5})
    words = summary.summary_text.split()
    assert 1 <= len(words) <= 5 and all(w in WORDS for w in words)
    again = hub(server, "summarization").summarization(text, generate_parameters={"max_new_tokens": 5})
    assert again.summary_text == summary.summary_text  # greedy: the same text every time
    translated = hub(server, "translation").translation("Hello world", src_lang="en", tgt_lang="fr")
    assert translated.translation_text.split()
    r = post(server, "text2text-generation", {"inputs": "hello world", "parameters": {"max_new_tokens": 3}})
    assert r.status_code == 200
    assert len(r.json()) == 1 and 1 <= len(r.json()[0]["generated_text"].split()) <= 3
    too_long = post(server, "summarization", {"inputs": text, "parameters": {"max_new_tokens": 100000}})
    assert too_long.status_code == 422 and "`max_new_tokens` must be between 1 and 512" in too_long.json()["error"]
    unknown = post(server, "summarization", {"inputs": text, "parameters": {"generate_parameters": {"beam": 2}}})
    assert unknown.status_code == 422 and "`generate_parameters.beam` is not supported" in unknown.json()["error"]


def test_a_pipeline_model_answers_only_its_task(server: Server) -> None:
    r = httpx.post(f"{server.base_url}/pipeline/feature-extraction/tiny/fill-mask", json={"inputs": "x"}, timeout=60)
    assert r.status_code == 400
    assert "Model tiny/fill-mask serves the task 'fill-mask', not 'feature-extraction'" in r.json()["error"]
    chat = httpx.post(
        f"{server.base_url}/models/tiny/summarization/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert chat.status_code == 400
    listed = {m["id"]: m["task"] for m in httpx.get(f"{server.base_url}/v1/models", timeout=10).json()["data"]}
    assert all(listed[f"tiny/{task}"] == task for task in TASKS)
