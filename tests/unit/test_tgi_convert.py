"""TGI request validation (router/src/validation.rs rules and messages) and response rendering."""

from __future__ import annotations

from typing import Any

import pytest

from infergate.core.engine import ModelLimits
from infergate.core.errors import BadRequestError, ValidationError
from infergate.core.outputs import GenerationResult, PromptInfo, StepEvent, Token
from infergate.protocols.tgi.convert import (
    TgiCall,
    completion_stream_fields,
    parse_generate,
    render_response,
    render_stream_event,
    validate_parameters,
)
from infergate.protocols.tgi.schemas import GenerateParameters

LIMITS = ModelLimits(max_total_tokens=8192, max_input_tokens=8191)
PREFIX = "Input validation error: "


def parse(
    parameters: dict[str, Any] | None = None,
    *,
    stream: bool | None = None,
    full_text_default: bool = False,
    limits: ModelLimits = LIMITS,
    extra: dict[str, Any] | None = None,
) -> TgiCall:
    """Parse {"inputs": "Hello", "parameters": parameters, **extra}; ``stream`` is what the route forces."""
    payload: dict[str, Any] = {"inputs": "Hello", **(extra or {})}
    if parameters is not None:
        payload["parameters"] = parameters
    return parse_generate(payload, stream=stream, full_text_default=full_text_default, limits=limits)


def rejects(
    parameters: dict[str, Any],
    *,
    stream: bool | None = None,
    limits: ModelLimits = LIMITS,
    extra: dict[str, Any] | None = None,
) -> str:
    """The message (prefix checked and stripped) of the ValidationError these parameters raise."""
    with pytest.raises(ValidationError) as info:
        parse(parameters, stream=stream, limits=limits, extra=extra)
    message = str(info.value)
    assert message == info.value.message
    assert message.startswith(PREFIX)
    return message[len(PREFIX) :]


# --- every rule, with TGI's exact words ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
        ({"best_of": 0, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 0"),
        ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
        ({"best_of": 2, "do_sample": True, "seed": 7}, "`seed` must not be set when `best_of` > 1"),
        ({"temperature": 0}, "`temperature` must be strictly positive"),
        ({"temperature": -0.5}, "`temperature` must be strictly positive"),
        ({"repetition_penalty": 0}, "`repetition_penalty` must be strictly positive"),
        ({"repetition_penalty": -1.0}, "`repetition_penalty` must be strictly positive"),
        ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
        ({"frequency_penalty": -2.01}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
        # TGI rejects top_p 1.0 (the open interval), unlike OpenAI.
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_p": 1.5}, "`top_p` must be > 0.0 and < 1.0"),
        ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
        ({"typical_p": 0.0}, "`typical_p` must be > 0.0 and < 1.0"),
        ({"top_k": 0}, "`top_k` must be strictly positive"),
        ({"top_k": -3}, "`top_k` must be strictly positive"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
        ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
        ({"top_n_tokens": -1}, "`top_n_tokens` must be >= 0 and <= 5. Given: -1"),
        ({"truncate": 0}, "`truncate` must be strictly positive and less than 8191. Given: 0"),
        ({"truncate": 8192}, "`truncate` must be strictly positive and less than 8191. Given: 8192"),
        (
            {"grammar": {"type": "regex"}},
            "`grammar` must be a non-empty string",
        ),
        (
            {"grammar": {"type": "json", "value": "{not json"}},
            "`grammar` is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1); "
            "send the schema as a JSON object",
        ),
    ],
)
def test_rule_message(parameters: dict[str, Any], message: str) -> None:
    assert rejects(parameters) == message


def test_empty_inputs() -> None:
    with pytest.raises(ValidationError) as info:
        parse_generate({"inputs": ""}, stream=None, full_text_default=False, limits=LIMITS)
    assert str(info.value) == PREFIX + "`inputs` cannot be empty"


def test_best_of_disabled_endpoint() -> None:
    limits = ModelLimits(max_total_tokens=8192, max_input_tokens=8191, max_best_of=1)
    expected = "`best_of` != 1 is not allowed for this endpoint"
    assert rejects({"best_of": 2, "do_sample": True}, limits=limits) == expected


def test_best_of_while_streaming() -> None:
    expected = "`best_of` != 1 is not supported when streaming tokens"
    assert rejects({"best_of": 2, "do_sample": True}, stream=True) == expected
    # The body's own `stream` counts too when the route does not force it.
    assert rejects({"best_of": 2, "do_sample": True}, stream=None, extra={"stream": True}) == expected


def test_decoder_input_details_while_streaming() -> None:
    expected = "`decoder_input_details` == true is not supported when streaming tokens"
    assert rejects({"decoder_input_details": True}, stream=True) == expected


@pytest.mark.parametrize("sampling", [{"do_sample": True}, {"temperature": 0.5}, {"top_k": 5}, {"top_p": 0.9}])
def test_best_of_two_with_sampling_is_accepted(sampling: dict[str, Any]) -> None:
    call = parse({"best_of": 2, **sampling})
    assert call.best_of == 2
    assert call.request.sampling.do_sample


def test_values_on_the_edge_are_accepted() -> None:
    call = parse({"frequency_penalty": 2.0, "truncate": 8191, "top_n_tokens": 5, "top_p": 0.99, "top_k": 1})
    assert call.request.sampling.frequency_penalty == 2.0
    assert call.request.truncate == 8191
    assert call.request.top_n_tokens == 5
    assert parse({"frequency_penalty": -2.0}).request.sampling.frequency_penalty == -2.0
    assert parse({"stop": ["a", "b", "c", "d"]}).request.stopping.stop == ("a", "b", "c", "d")


@pytest.mark.parametrize(("parameters", "field"), [({"watermark": True}, "watermark"), ({"adapter_id": "x"}, "x")])
def test_unsupported_features_are_validation_errors(parameters: dict[str, Any], field: str) -> None:
    assert field in rejects(parameters)


# --- strict types: a wrong JSON type is an error naming the field, never coerced ---------------------------


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"temperature": "0.5"}, "temperature"),
        ({"max_new_tokens": 1.5}, "max_new_tokens"),
        ({"max_new_tokens": 20.0}, "max_new_tokens"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"do_sample": 1}, "do_sample"),
        ({"stop": "x"}, "stop"),
        ({"seed": -1}, "seed"),
    ],
)
def test_wrong_types_name_the_field(parameters: dict[str, Any], field: str) -> None:
    assert f"parameters.{field}" in rejects(parameters)


def test_inputs_must_be_a_string() -> None:
    with pytest.raises(ValidationError) as info:
        parse_generate({"inputs": 5}, stream=None, full_text_default=False, limits=LIMITS)
    assert "inputs" in str(info.value)


def test_missing_inputs() -> None:
    with pytest.raises(ValidationError) as info:
        parse_generate({"parameters": {}}, stream=None, full_text_default=False, limits=LIMITS)
    assert "`inputs` is required" in str(info.value)


def test_integer_temperature_is_a_number() -> None:
    # serde accepts 2 for an f32; so must we.
    assert parse({"temperature": 2}).request.sampling.temperature == 2.0


# --- body shapes --------------------------------------------------------------------------------------------


def test_bare_string_body_is_the_inputs() -> None:
    call = parse_generate("Once upon a time", stream=None, full_text_default=True, limits=LIMITS)
    assert call.request.prompt == "Once upon a time"
    assert not call.stream


@pytest.mark.parametrize("body", [["Hello"], 5, None, 1.5, True])
def test_non_object_body_is_a_bad_request(body: Any) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_generate(body, stream=None, full_text_default=False, limits=LIMITS)
    assert "JSON object" in str(info.value)


def test_nulls_mean_absent() -> None:
    # Exactly what huggingface_hub 0.17 to 0.22 send.
    old_client = {
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
    }
    call = parse(old_client, stream=None, extra={"stream": False})
    assert call.best_of == 1
    assert not call.stream and not call.details and not call.return_full_text
    s = call.request.sampling
    assert (s.do_sample, s.temperature, s.top_k, s.top_p, s.typical_p) == (False, 1.0, None, 1.0, 1.0)
    assert (s.repetition_penalty, s.frequency_penalty, s.seed) == (1.0, 0.0, None)
    assert call.request.stopping.stop == ()
    assert call.request.truncate is None
    assert call.request.top_n_tokens == 0


def test_all_null_parameters_are_defaults() -> None:
    names = GenerateParameters.model_fields
    assert parse(dict.fromkeys(names)).request == parse({}).request


def test_unknown_parameters_are_ignored() -> None:
    assert parse({"max_new_tokens": 5, "no_such_thing": 1}).request.stopping.max_new_tokens == 5


def test_defaults() -> None:
    call = parse()
    assert call.request.stopping.max_new_tokens == 20
    assert call.request.stopping.include_stop_in_output  # TGI keeps the stop sequence in the text
    assert call.best_of == 1
    assert not call.details
    assert call.request.prefill_details is False
    assert (call.use_cache, call.wait_for_model) == (None, None)


def test_stop_sequences_is_accepted_as_stop() -> None:
    assert parse({"stop_sequences": ["\n", "END"]}).request.stopping.stop == ("\n", "END")
    assert parse({"stop": ["x"]}).request.stopping.stop == ("x",)


def test_stream_flag() -> None:
    assert parse(stream=True).stream
    assert not parse(stream=False, extra={"stream": True}).stream  # the route decides when it says so
    assert parse(stream=None, extra={"stream": True}).stream
    assert not parse(stream=None).stream


def test_options_are_passed_on() -> None:
    call = parse(extra={"options": {"use_cache": False, "wait_for_model": True}})
    assert (call.use_cache, call.wait_for_model) == (False, True)


def test_details_flags() -> None:
    assert parse({"details": True}).details
    call = parse({"decoder_input_details": True})
    assert call.details and call.request.prefill_details


# --- sampling switch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "do_sample"),
    [
        (None, False),  # no `parameters` at all: greedy, as the announcement documents
        ({}, False),
        ({"do_sample": False}, False),
        ({"temperature": 1.0}, False),  # the neutral temperature warps nothing
        ({"repetition_penalty": 1.3}, False),  # a penalty is not a sampling parameter
        ({"seed": 3}, False),
        ({"do_sample": True}, True),
        ({"temperature": 0.7}, True),
        ({"temperature": 1.5}, True),
        ({"top_k": 10}, True),
        ({"top_p": 0.9}, True),
        ({"typical_p": 0.9}, True),
    ],
)
def test_sampling_turns_on_with_sampling_parameters(parameters: dict[str, Any] | None, do_sample: bool) -> None:
    assert parse(parameters).request.sampling.do_sample is do_sample


def test_sampling_values_reach_the_request() -> None:
    call = parse(
        {
            "temperature": 0.7,
            "top_k": 10,
            "top_p": 0.9,
            "typical_p": 0.8,
            "repetition_penalty": 1.2,
            "frequency_penalty": 0.5,
            "seed": 42,
            "max_new_tokens": 7,
            "truncate": 100,
            "top_n_tokens": 3,
        }
    )
    s = call.request.sampling
    assert (s.temperature, s.top_k, s.top_p, s.typical_p) == (0.7, 10, 0.9, 0.8)
    assert (s.repetition_penalty, s.frequency_penalty, s.seed) == (1.2, 0.5, 42)
    assert call.request.stopping.max_new_tokens == 7
    assert (call.request.truncate, call.request.top_n_tokens) == (100, 3)


def test_validate_parameters_directly() -> None:
    request, best_of = validate_parameters("Hi", GenerateParameters(max_new_tokens=3), False, LIMITS)
    assert (request.prompt, request.stopping.max_new_tokens, best_of) == ("Hi", 3, 1)
    with pytest.raises(ValidationError, match="^Input validation error: `top_k` must be strictly positive$"):
        validate_parameters("Hi", GenerateParameters(top_k=0), False, LIMITS)


# --- return_full_text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("default", [True, False])
def test_return_full_text_default_follows_the_route(default: bool) -> None:
    assert parse(full_text_default=default).return_full_text is default
    assert parse({"return_full_text": None}, full_text_default=default).return_full_text is default
    assert parse({"return_full_text": True}, full_text_default=default).return_full_text is True
    assert parse({"return_full_text": False}, full_text_default=default).return_full_text is False


# --- rendering ----------------------------------------------------------------------------------------------

TOKENS = [Token(1, " a", -0.5), Token(2, " b", -0.25), Token(0, "</s>", -0.1, special=True)]


def result(text: str = " a b", top: list[tuple[Token, ...]] | None = None, seed: int | None = None) -> GenerationResult:
    return GenerationResult(
        text=text,
        finish_reason="eos_token",
        input_length=4,
        seed=seed,
        tokens=list(TOKENS),
        top_tokens=top or [],
    )


def tok(t: Token) -> dict[str, Any]:
    return {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special}


def test_render_without_details() -> None:
    assert render_response(parse({"details": False}), result()) == {"generated_text": " a b"}
    assert render_response(parse(full_text_default=True), result()) == {"generated_text": "Hello a b"}


def test_render_with_details() -> None:
    out = render_response(parse({"details": True}), result(seed=None))
    assert out == {
        "generated_text": " a b",
        "details": {
            "finish_reason": "eos_token",
            "generated_tokens": 3,
            "seed": None,
            "prefill": [],
            "tokens": [tok(t) for t in TOKENS],
        },
    }  # no top_tokens (empty) and no best_of_sequences (no others)


def test_render_top_tokens_when_present() -> None:
    tops = [(Token(5, "x", -1.0),), (Token(6, "y", -2.0),), (Token(7, "z", -3.0),)]
    details = render_response(parse({"details": True, "top_n_tokens": 1}), result(top=tops))["details"]
    assert details["top_tokens"] == [[tok(t) for t in step] for step in tops]


def test_render_prefill_tokens() -> None:
    r = result()
    r.prefill = (Token(9, "Hello", None), Token(10, "!", -3.0))
    details = render_response(parse({"decoder_input_details": True}), r)["details"]
    assert details["prefill"] == [{"id": 9, "text": "Hello", "logprob": None}, {"id": 10, "text": "!", "logprob": -3.0}]


def test_render_best_of_sequences_only_with_others() -> None:
    call = parse({"details": True, "best_of": 2, "do_sample": True, "return_full_text": True})
    other = result(" c", seed=11)
    out = render_response(call, result(seed=10), [other])
    assert out["generated_text"] == "Hello a b"
    (seq,) = out["details"]["best_of_sequences"]
    assert seq["generated_text"] == "Hello c"  # the prompt is prepended to every sequence
    assert seq["seed"] == 11 and seq["finish_reason"] == "eos_token" and seq["generated_tokens"] == 3
    assert "best_of_sequences" not in render_response(call, result(), [])["details"]
    assert "best_of_sequences" not in render_response(call, result(), None)["details"]


def test_stream_intermediate_event() -> None:
    call = parse({"details": True}, stream=True)
    info = PromptInfo(input_length=4, seed=None)
    payload = render_stream_event(call, info, StepEvent(1, TOKENS[0], " a"), " a")
    assert payload == {"index": 1, "token": tok(TOKENS[0]), "generated_text": None, "details": None}
    assert list(payload) == ["index", "token", "generated_text", "details"]


def test_stream_event_top_tokens_only_when_present() -> None:
    call = parse({"top_n_tokens": 2}, stream=True)
    info = PromptInfo(input_length=4, seed=None)
    top = (Token(1, " a", -0.5), Token(3, " c", -1.5))
    payload = render_stream_event(call, info, StepEvent(1, TOKENS[0], " a", top_tokens=top), " a")
    assert payload["top_tokens"] == [tok(t) for t in top]
    assert "top_tokens" not in render_stream_event(call, info, StepEvent(2, TOKENS[1], " b"), " a b")


def test_stream_last_event_with_details() -> None:
    call = parse({"details": True, "do_sample": True, "seed": 5}, stream=True, full_text_default=True)
    info = PromptInfo(input_length=4, seed=5)
    last = StepEvent(3, TOKENS[2], "", finish_reason="eos_token")
    payload = render_stream_event(call, info, last, " a b")
    assert payload["generated_text"] == "Hello a b"
    assert payload["details"] == {"finish_reason": "eos_token", "generated_tokens": 3, "seed": 5, "input_length": 4}


def test_stream_last_event_without_details() -> None:
    call = parse(stream=True)
    info = PromptInfo(input_length=4, seed=None)
    last = StepEvent(2, TOKENS[1], " b", finish_reason="length")
    payload = render_stream_event(call, info, last, " a b")
    assert payload["generated_text"] == " a b"
    assert payload["details"] is None


def test_completion_stream_fields_are_a_tgi_event_whose_text_is_the_chunks() -> None:
    # The token's text is what the chunk adds, so that joined tokens give generated_text.
    event = StepEvent(1, Token(7, "\ufffd", -0.5), "")
    assert completion_stream_fields(event, None) == {
        "token": {"id": 7, "text": "", "logprob": -0.5, "special": False},
        "generated_text": None,
        "details": None,
    }
    last = StepEvent(2, Token(9, " b", -0.1), " b", finish_reason="length")
    assert completion_stream_fields(last, " a b")["generated_text"] == " a b"
