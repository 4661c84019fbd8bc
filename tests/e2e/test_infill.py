"""Code infilling: the announcement's `<PRE> {prefix} <SUF>{suffix} <MID>` prompt reaches a model whose
tokenizer has those markers as special tokens, `<EOT>` ends the middle, and OpenAI's `/v1/completions` with
`suffix` builds the family's infill prompt itself. The code model is a tiny random Llama with Code Llama's
tokens (no real code model ships as a package); a model without infill tokens gets a clear 400 (OpenAI's status
for a bad parameter)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from tests.support.server import CHAT_MODEL_LAZY_OPEN_ANONYMOUS, MODEL_ID, Server, serving
from tests.support.tiny_models import CODE_LLAMA_TOKENS, build_code_llama

CODE_ID = "tiny/code-llama"
NO_INFILL_ID = "tiny/code-llama-no-infill"
WRONG_INFILL_ID = "tiny/code-llama-as-starcoder"
PREFIX = "def add(a, b):"
SUFFIX = "return c"


@pytest.fixture(scope="module")
def code_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_code_llama(tmp_path_factory.mktemp("tiny-code-llama"))


@pytest.fixture(scope="module")
def code_server(tmp_path_factory: pytest.TempPathFactory, code_model: Path) -> Iterator[Server]:
    config = CHAT_MODEL_LAZY_OPEN_ANONYMOUS + f'\n[[models]]\nid = "{CODE_ID}"\nsource = "{code_model}"\n'
    # The catalog can insist on a format, or turn infilling off, for the same files.
    for model_id, setting in ((NO_INFILL_ID, "none"), (WRONG_INFILL_ID, "starcoder")):
        config += f'\n[[models]]\nid = "{model_id}"\nsource = "{code_model}"\ninfill = "{setting}"\n'
    yield from serving(tmp_path_factory.mktemp("infill"), config, token_tier="pro")


@pytest.fixture
def oai(code_server: Server) -> Iterator[openai.OpenAI]:
    headers = {"x-wait-for-model": "true", "x-use-cache": "0"}
    with openai.OpenAI(
        base_url=f"{code_server.base_url}/v1", api_key=code_server.token, max_retries=0, default_headers=headers
    ) as client:
        yield client


def test_the_announcements_infill_prompt_uses_the_special_tokens(code_server: Server) -> None:
    body = {
        "inputs": f"<PRE> {PREFIX} <SUF>{SUFFIX} <MID>",
        "parameters": {"max_new_tokens": 3, "details": True, "decoder_input_details": True},
    }
    r = httpx.post(
        f"{code_server.base_url}/models/{CODE_ID}", json=body, headers={"x-wait-for-model": "true"}, timeout=120
    )
    assert r.status_code == 200, r.text
    prefill = [t["text"] for t in r.json()[0]["details"]["prefill"]]
    for marker in ("<PRE>", "<SUF>", "<MID>"):
        assert prefill.count(marker) == 1, prefill  # one token each, not split into characters


def test_completions_with_suffix_build_the_infill_prompt(oai: openai.OpenAI, code_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(code_model)
    out = oai.completions.create(model=CODE_ID, prompt=PREFIX, suffix=SUFFIX, max_tokens=4, temperature=0)
    expected = tokenizer(f"<PRE> {PREFIX} <SUF>{SUFFIX} <MID>")["input_ids"]
    assert out.usage is not None and out.usage.prompt_tokens == len(expected)
    plain = oai.completions.create(model=CODE_ID, prompt=PREFIX, max_tokens=4, temperature=0)
    assert plain.usage is not None and plain.usage.prompt_tokens == len(tokenizer(PREFIX)["input_ids"])


def test_eot_ends_the_middle(oai: openai.OpenAI, code_model: Path) -> None:
    eot = AutoTokenizer.from_pretrained(code_model).convert_tokens_to_ids(CODE_LLAMA_TOKENS[3])
    # A random model would not choose <EOT> by itself: bias it, and the generation must end there.
    out = oai.completions.create(
        model=CODE_ID, prompt=PREFIX, suffix=SUFFIX, max_tokens=20, temperature=0, logit_bias={str(eot): 100}
    )
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.completion_tokens == 1
    assert out.choices[0].text == ""  # the end token is not part of the middle


def test_a_model_without_infill_tokens_is_a_clear_400(server: Server) -> None:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.token, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model=MODEL_ID, prompt=PREFIX, suffix=SUFFIX, max_tokens=4)
    assert f"model {MODEL_ID} has no infill tokens" in refused.value.message
    assert "call a code model that has them" in refused.value.message
    assert refused.value.response.json()["error"]["param"] == "suffix"


def test_the_catalog_says_and_sets_each_models_infill_format(oai: openai.OpenAI, code_server: Server) -> None:
    oai.completions.create(model=CODE_ID, prompt=PREFIX, max_tokens=1)  # loaded
    listed = {m["id"]: m for m in httpx.get(f"{code_server.base_url}/v1/models", timeout=10).json()["data"]}
    assert listed[CODE_ID]["infill"] == "codellama"
    with pytest.raises(openai.BadRequestError) as off:
        oai.completions.create(model=NO_INFILL_ID, prompt=PREFIX, suffix=SUFFIX, max_tokens=2)
    assert f"model {NO_INFILL_ID} has no infill tokens" in off.value.message
    with pytest.raises(openai.InternalServerError) as wrong:
        oai.completions.create(model=WRONG_INFILL_ID, prompt=PREFIX, suffix=SUFFIX, max_tokens=2)
    assert "infill = 'starcoder' needs the tokens <fim_prefix>, <fim_suffix>, <fim_middle>" in wrong.value.message
