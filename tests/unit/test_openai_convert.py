"""OpenAI chat/completions: request rules, the core request they build, and the response shapes."""

from __future__ import annotations

from typing import Any

import pytest

from infergate.core.engine import ModelLimits
from infergate.core.errors import BadRequestError, ValidationError
from infergate.core.outputs import GenerationResult, Token
from infergate.core.requests import Grammar, ToolChoice
from infergate.protocols.openai.convert import (
    ChatCall,
    CompletionCall,
    build_request,
    chat_response,
    completion_response,
    finish_reason,
    messages_for_template,
    parse_chat,
    parse_completion,
    usage,
)

LIMITS = ModelLimits(max_total_tokens=8192, max_input_tokens=8191)
MESSAGES = [{"role": "user", "content": "Hello"}]


def chat(**fields: Any) -> ChatCall:
    return parse_chat({"messages": MESSAGES, **fields}, LIMITS)


def completion(**fields: Any) -> CompletionCall:
    return parse_completion({"prompt": "Once upon a time", **fields}, LIMITS)


def chat_error(**fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        chat(**fields)
    return str(info.value)


def completion_error(**fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        completion(**fields)
    return str(info.value)


# --- parse_chat / parse_completion rules --------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [-0.1, 2.01, 5])
def test_temperature_out_of_range(temperature: float) -> None:
    assert "`temperature`" in chat_error(temperature=temperature)
    assert "`temperature`" in completion_error(temperature=temperature)


@pytest.mark.parametrize("temperature", [0, 0.0, 1, 2.0])
def test_temperature_in_range(temperature: float) -> None:
    assert chat(temperature=temperature).wire.temperature == temperature


def test_top_p_one_is_accepted() -> None:
    # OpenAI's default is 1.0, unlike TGI's open interval.
    assert chat(top_p=1.0).wire.top_p == 1.0
    assert completion(top_p=1.0).wire.top_p == 1.0


@pytest.mark.parametrize("top_p", [0, 1.01, -0.5])
def test_top_p_out_of_range(top_p: float) -> None:
    assert "`top_p`" in chat_error(top_p=top_p)


def test_n() -> None:
    assert chat().n == 1
    assert chat(n=3).n == 3
    assert completion(n=2).n == 2
    assert "`n`" in chat_error(n=0)
    assert "`n`" in chat_error(n=9)


def test_stop_string_or_list() -> None:
    request = build_request(chat(stop="\n").wire, "p", max_tokens=5, top_n=0, add_special_tokens=False)
    assert request.stopping.stop == ("\n",)
    request = build_request(chat(stop=["a", "b"]).wire, "p", max_tokens=5, top_n=0, add_special_tokens=False)
    assert request.stopping.stop == ("a", "b")
    assert chat(stop=["a", "b", "c", "d"]).wire.stop == ["a", "b", "c", "d"]


def test_more_than_four_stops_rejected() -> None:
    expected = "Input validation error: `stop` supports up to 4 stop sequences. Given: 5"
    assert chat_error(stop=list("abcde")) == expected
    assert completion_error(stop=list("abcde")) == expected


def refused(**fields: Any) -> BadRequestError:
    with pytest.raises(BadRequestError) as info:
        chat(**fields)
    return info.value


TOOLS = [
    {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "g"}},
]


def test_tools_reach_the_request_with_the_choice() -> None:
    request = chat(tools=TOOLS).requests[0]
    assert request.tools == tuple(TOOLS) and request.tool_choice == ToolChoice("auto")
    named = chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "g"}}, parallel_tool_calls=False)
    assert named.requests[0].tool_choice == ToolChoice("required", "g", parallel=False)
    assert chat(tools=TOOLS, tool_choice="g").requests[0].tool_choice.name == "g"  # TGI's form: the bare name


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
        ({"tools": TOOLS, "tool_choice": "h"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"guided_json": {"type": "object"}, "guided_regex": "a+"}, "guided_regex"),
        ({"guided_choice": []}, "guided_choice"),
    ],
)
def test_bad_tools_and_formats_name_their_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationError) as info:
        chat(**fields)
    assert info.value.param == param


@pytest.mark.parametrize(
    ("fields", "grammar"),
    [
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": {"type": "json_object"}}, Grammar("json", '{"type": "object"}')),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}}},
            Grammar("json", '{"type": "integer"}'),
        ),
        ({"response_format": {"type": "json", "value": '{"type": "string"}'}}, Grammar("json", '{"type": "string"}')),
        ({"response_format": {"type": "regex", "value": "a+"}}, Grammar("regex", "a+")),
        ({"guided_choice": ["yes", "no"]}, Grammar("lark", 'start: "yes" | "no"')),
        ({"guided_grammar": "root ::= [a-z]+"}, Grammar("gbnf", "root ::= [a-z]+")),
        ({"structured_outputs": {"regex": "[0-9]+"}}, Grammar("regex", "[0-9]+")),
    ],
)
def test_every_way_to_ask_for_a_shape(fields: dict[str, Any], grammar: Grammar | None) -> None:
    found = chat(**fields).requests[0].grammar
    assert (found and (found.kind, found.value)) == (grammar and (grammar.kind, grammar.value))
    assert found is None or found.source.startswith(next(iter(fields)))  # errors about it name the field


def test_suffix_is_kept_for_the_infill_prompt() -> None:
    # The route asks the model for its family's infill format (tests/e2e/test_infill.py).
    assert completion(suffix="The end.").wire.suffix == "The end."


def test_top_logprobs_needs_logprobs() -> None:
    assert chat_error(top_logprobs=2) == "Input validation error: `top_logprobs` needs `logprobs: true`"
    call = chat(top_logprobs=2, logprobs=True)
    assert (call.logprobs, call.top_logprobs) == (True, 2)
    assert chat(top_logprobs=20, logprobs=True).top_logprobs == 20  # OpenAI's range is 0..20
    assert "top_logprobs" in chat_error(top_logprobs=21, logprobs=True)
    assert "logprobs" in completion_error(logprobs=6)  # the legacy completions' range is 0..5


def test_logit_bias_keys_must_be_token_ids() -> None:
    assert "`logit_bias`" in chat_error(logit_bias={"hello": 5})


def test_chat_needs_messages() -> None:
    assert "messages" in chat_error(messages=[])
    with pytest.raises(ValidationError, match="`messages` is required"):
        parse_chat({"max_tokens": 5}, LIMITS)


@pytest.mark.parametrize("body", [[], "hello", 3, None])
def test_non_object_body_is_a_bad_request(body: Any) -> None:
    with pytest.raises(BadRequestError):
        parse_chat(body, LIMITS)
    with pytest.raises(BadRequestError):
        parse_completion(body, LIMITS)


def test_completion_prompts() -> None:
    assert completion().prompts == ["Once upon a time"]
    assert completion(prompt=["a", "b"]).prompts == ["a", "b"]
    assert "`prompt`" in completion_error(prompt=[])
    assert "`prompt`" in completion_error(prompt=list("abcde"))
    assert "`best_of`" in completion_error(best_of=2)


def test_completion_prompts_as_token_ids() -> None:
    """OpenAI's four prompt forms: a string, strings, token ids, lists of token ids (lm-eval sends the last)."""
    assert completion(prompt=[1, 2, 3]).prompts == [(1, 2, 3)]
    assert completion(prompt=[[1, 2], [3]]).prompts == [(1, 2), (3,)]
    request = build_request(completion().wire, (5, 6), max_tokens=1, top_n=0, add_special_tokens=True)
    assert request.prompt_ids == (5, 6) and request.prompt == ""
    assert "`prompt`" in completion_error(prompt=[[]])
    assert "`prompt`" in completion_error(prompt=[1, "a"])
    assert "`suffix`" in completion_error(prompt=[1, 2], suffix="x")


def test_max_tokens_zero_needs_echo() -> None:
    call = completion(max_tokens=0, echo=True, logprobs=1)
    assert call.max_tokens == 0 and call.requests[0].prefill_details
    with pytest.raises(ValidationError) as info:
        completion(max_tokens=0)
    assert info.value.param == "max_tokens"
    assert completion().max_tokens == 16  # OpenAI's default
    assert "`max_tokens`" in chat_error(max_tokens=0)


def test_prompt_details_only_when_the_prompt_comes_back() -> None:
    assert not completion(logprobs=1).requests[0].prefill_details
    assert not completion(echo=True).requests[0].prefill_details  # the text prompt itself is echoed
    assert completion(echo=True, prompt=[1, 2]).requests[0].prefill_details  # token ids: text from the engine


def test_unknown_fields_are_refused_naming_them() -> None:
    with pytest.raises(BadRequestError) as info:
        chat(foo=1, bar=2)
    assert str(info.value) == "Unrecognized request argument supplied: foo, bar"
    assert info.value.param == "foo"
    with pytest.raises(BadRequestError, match="Unrecognized request argument supplied: typo"):
        completion(typo=True)


OPENAI_CHAT_FIELDS = {
    "frequency_penalty": 0.1,
    "logit_bias": {"1": 1},
    "logprobs": True,
    "top_logprobs": 2,
    "max_tokens": 5,
    "max_completion_tokens": 5,
    "n": 1,
    "presence_penalty": 0.1,
    "response_format": {"type": "text"},
    "seed": 1,
    "service_tier": "auto",
    "stop": ["x"],
    "stream": False,
    "stream_options": {"include_usage": True},
    "temperature": 0.5,
    "top_p": 0.9,
    "tools": [],
    "tool_choice": "none",
    "parallel_tool_calls": False,
    "user": "u",
    "metadata": {"k": "v"},
    "store": False,
    "modalities": ["text"],
    "prediction": {"type": "content", "content": "x"},
    "function_call": "auto",
    "functions": [],
    "prompt_cache_key": "k",
    "safety_identifier": "s",
    # vLLM's and TGI's extensions
    "top_k": 40,
    "min_p": 0.05,
    "repetition_penalty": 1.1,
    "typical_p": 0.9,
    "ignore_eos": False,
    "include_stop_str_in_output": False,
    "truncate_prompt_tokens": 100,
    "add_generation_prompt": True,
    "add_special_tokens": False,
    "skip_special_tokens": True,
    "tool_prompt": "You have tools",
    "options": {"wait_for_model": True},
}


def test_every_field_clients_send_is_known() -> None:
    call = chat(**OPENAI_CHAT_FIELDS)
    s = build_request(call.wire, "p", max_tokens=5, top_n=2, add_special_tokens=False).sampling
    assert (s.top_k, s.min_p, s.typical_p) == (40, 0.05, 0.9)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("reasoning_effort", "low"),
        ("web_search_options", {}),
        ("functions", [{"name": "f"}]),
        ("use_beam_search", True),
        ("echo", True),
    ],
)
def test_fields_the_server_cannot_honour_are_refused_naming_them(field: str, value: Any) -> None:
    error = refused(**{field: value})
    assert error.param == field
    assert f"`{field}` is not supported by this server" in str(error)


def test_validation_errors_name_their_parameter() -> None:
    for fields, param in [
        ({"temperature": 3}, "temperature"),
        ({"messages": [{"role": "nobody", "content": "x"}]}, "messages[0].role"),
        ({"stop": list("abcde")}, "stop"),
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"logit_bias": {"1": 3.7e174}}, "logit_bias"),  # OpenAI's range is -100..100 (a float overflow was a 424)
        ({"top_logprobs": 2}, "top_logprobs"),
    ]:
        with pytest.raises(ValidationError) as info:
            chat(**fields)
        assert info.value.param == param, fields
    with pytest.raises(ValidationError) as info:
        completion(prompt=3)
    assert info.value.param == "prompt"


def test_stream_options() -> None:
    call = chat(stream=True, stream_options={"include_usage": True})
    assert call.stream and call.include_usage
    assert not chat(stream=True).include_usage


# --- build_request ------------------------------------------------------------------------------------------


def build(**fields: Any) -> Any:
    return build_request(chat(**fields).wire, "PROMPT", max_tokens=12, top_n=2, add_special_tokens=False)


def test_temperature_zero_is_greedy() -> None:
    s = build(temperature=0).sampling
    assert not s.do_sample
    assert s.temperature == 1.0  # logprobs stay those of the plain distribution


def test_default_samples_at_temperature_one() -> None:
    s = build().sampling
    assert s.do_sample and s.temperature == 1.0


def test_tgi_do_sample_false_is_greedy() -> None:
    # huggingface.js 4.x copies TGI's parameters into the /v1/completions body it sends.
    assert not build(do_sample=False, temperature=0.7).sampling.do_sample
    assert not build_request(
        completion(do_sample=False).wire, "PROMPT", max_tokens=12, top_n=0, add_special_tokens=True
    ).sampling.do_sample
    s = build(do_sample=True).sampling
    assert s.do_sample and s.temperature == 1.0


def test_temperature_passes_through() -> None:
    s = build(temperature=0.7).sampling
    assert s.do_sample and s.temperature == 0.7


def test_build_request_fields() -> None:
    request = build(
        stop=["END"],
        top_p=0.9,
        top_k=40,
        seed=3,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
        repetition_penalty=1.1,
        logit_bias={"42": 5, "7": -100},
    )
    assert request.prompt == "PROMPT"
    assert request.stopping.max_new_tokens == 12
    assert request.stopping.stop == ("END",)
    assert request.stopping.include_stop_in_output is False  # OpenAI leaves the stop sequence out
    assert request.top_n_tokens == 2
    assert request.add_special_tokens is False
    s = request.sampling
    assert (s.top_p, s.top_k, s.seed) == (0.9, 40, 3)
    assert (s.frequency_penalty, s.presence_penalty, s.repetition_penalty) == (0.5, -0.5, 1.1)
    assert s.logit_bias == ((42, 5.0), (7, -100.0))
    assert all(isinstance(k, int) for k, _ in s.logit_bias)


def test_build_request_defaults() -> None:
    request = build_request(completion().wire, "p", max_tokens=None, top_n=0, add_special_tokens=True)
    s = request.sampling
    assert (s.top_p, s.top_k, s.repetition_penalty, s.frequency_penalty, s.presence_penalty) == (1.0, None, 1.0, 0, 0)
    assert s.logit_bias == ()
    assert request.stopping.max_new_tokens is None
    assert request.stopping.stop == ()
    assert request.stopping.include_stop_in_output is False


# --- messages_for_template ----------------------------------------------------------------------------------


def test_messages_for_template() -> None:
    call = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": "Sys"},
            {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": None},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "See "},
                    {"type": "image_url", "image_url": {"url": "http://x/cat.png"}},
                ],
            },
        ]
    )
    assert messages_for_template(call.wire) == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Sys"},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "See ![](http://x/cat.png)"},
    ]


# --- finish reasons and responses ---------------------------------------------------------------------------


@pytest.mark.parametrize(("tgi", "openai"), [("eos_token", "stop"), ("stop_sequence", "stop"), ("length", "length")])
def test_finish_reason(tgi: str, openai: str) -> None:
    assert finish_reason(tgi) == openai


def result(text: str, input_length: int, n_tokens: int, reason: str = "eos_token") -> GenerationResult:
    tokens = [Token(i, f"t{i}", -0.5 * (i + 1)) for i in range(n_tokens)]
    return GenerationResult(text, reason, input_length, None, tokens=tokens)


def test_usage() -> None:
    assert usage(3, 4) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_chat_response() -> None:
    call = chat(n=2)
    out = chat_response(call, "m", "chatcmpl-1", [result("A", 7, 3), result("B", 7, 5, "length")])
    assert out["object"] == "chat.completion"
    assert (out["id"], out["model"]) == ("chatcmpl-1", "m")
    assert isinstance(out["created"], int)
    assert out["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "A"}, "logprobs": None, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "B"}, "logprobs": None, "finish_reason": "length"},
    ]
    # The prompt is counted once, the completions of every choice are added up.
    assert out["usage"] == {"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15}


def test_chat_response_logprobs() -> None:
    call = chat(logprobs=True, top_logprobs=1)
    r = result("A", 2, 2)
    r.top_tokens = [(Token(9, "é", -0.1),), (Token(8, "z", -0.2),)]
    content = chat_response(call, "m", "id", [r])["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == ["t0", "t1"]
    assert [c["logprob"] for c in content] == [-0.5, -1.0]
    assert content[0]["top_logprobs"] == [{"token": "é", "logprob": -0.1, "bytes": [0xC3, 0xA9]}]


def test_completion_response_usage_counts_each_prompt_once() -> None:
    call = completion(prompt=["p0", "p1"], n=2, echo=True)
    results = [(0, result("a", 5, 1)), (0, result("b", 5, 2)), (1, result("c", 9, 3)), (1, result("d", 9, 4))]
    out = completion_response(call, "m", "cmpl-1", results)
    assert out["object"] == "text_completion"
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in out["choices"]] == ["p0a", "p0b", "p1c", "p1d"]  # echo prepends the prompt
    assert out["usage"] == {"prompt_tokens": 14, "completion_tokens": 10, "total_tokens": 24}


def test_completion_echo_logprobs_put_the_prompt_first() -> None:
    """OpenAI's (and vLLM's) echo: the prompt's tokens with their logprobs (the first has none), then the
    generated ones; text_offset is where each token starts in the returned text."""
    call = completion(prompt=[7, 8, 9], echo=True, logprobs=1, max_tokens=1)
    r = result("", 3, 0, "length")
    r.prefill = (Token(7, "He", None), Token(8, "llo", -1.5), Token(9, " wor", -2.0))
    r.prefill_pieces = ("He", "llo", " wor")
    r.prefill_top = ((), (Token(8, "llo", -1.5),), (Token(5, "!", -0.5),))
    r.tokens, r.top_tokens, r.text = [Token(4, "ld", -0.25)], [(Token(4, "ld", -0.25),)], "ld"
    choice = completion_response(call, "m", "cmpl-1", [(0, r)])["choices"][0]
    assert choice["text"] == "Hello world"
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == ["He", "llo", " wor", "ld"]
    assert logprobs["token_logprobs"] == [None, -1.5, -2.0, -0.25]
    assert logprobs["top_logprobs"] == [None, {"llo": -1.5}, {"!": -0.5, " wor": -2.0}, {"ld": -0.25}]
    assert logprobs["text_offset"] == [0, 2, 5, 9]
    for token, offset in zip(logprobs["tokens"], logprobs["text_offset"], strict=True):
        assert choice["text"][offset : offset + len(token)] == token


def test_completion_echo_with_zero_tokens() -> None:
    call = completion(echo=True, logprobs=0, max_tokens=0)
    r = result("", 2, 0, "length")
    r.prefill, r.prefill_pieces, r.prefill_top = (Token(1, "A", None), Token(2, "B", -3.0)), ("A", "B"), ((), ())
    out = completion_response(call, "m", "cmpl-1", [(0, r)])
    assert out["choices"][0]["text"] == "Once upon a time"
    assert out["choices"][0]["logprobs"]["token_logprobs"] == [None, -3.0]
    assert out["choices"][0]["logprobs"]["top_logprobs"] == [None, {"B": -3.0}]
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2}


def test_completion_response_without_echo() -> None:
    call = completion()
    out = completion_response(call, "m", "cmpl-1", [(0, result(" there", 4, 2, "length"))])
    assert out["choices"] == [{"index": 0, "text": " there", "logprobs": None, "finish_reason": "length"}]
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


# --- TGI's parameters in a completions body (huggingface.js flattens them; llm-vscode nests them) -------------


def test_tgi_names_are_read_as_openai_ones_at_the_top_level() -> None:
    call = completion(max_new_tokens=7, return_full_text=True, stop_sequences=["\n"], truncate=5, details=True)
    assert call.max_tokens == 7 and call.echo
    assert call.wire.stop == ["\n"] and call.wire.truncate_prompt_tokens == 5


def test_tgi_parameters_nested_under_parameters_are_read_too() -> None:
    call = completion(parameters={"max_new_tokens": 3, "temperature": 0.2, "return_full_text": False})
    assert call.max_tokens == 3 and not call.echo and call.wire.temperature == 0.2


def test_the_openai_name_wins_over_the_tgi_one() -> None:
    assert completion(max_tokens=9, max_new_tokens=3).max_tokens == 9
    assert completion(max_tokens=9, parameters={"max_new_tokens": 3}).max_tokens == 9


def test_tgi_parameters_this_server_cannot_honour_are_refused() -> None:
    with pytest.raises(BadRequestError) as info:
        completion(watermark=True)
    assert info.value.param == "watermark"
    with pytest.raises(BadRequestError) as info:
        completion(parameters="fast")
    assert info.value.param == "parameters"
    with pytest.raises(BadRequestError) as info:
        completion(parameters={"nonsense": 1})
    assert info.value.param == "nonsense"
