"""Wire models of OpenAI's chat and completions requests: the fields this server honours.

Fields it accepts without effect, or refuses with a 400 saying what to do, are in ``fields.py``; any other
top-level field is refused as OpenAI does ("Unrecognized request argument supplied").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from infergate.protocols.openai.fields import closed_schema

__all__ = [
    "MAX_CHAT_TOP_LOGPROBS",
    "MAX_COMPLETION_LOGPROBS",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "StreamOptions",
]

MAX_CHAT_TOP_LOGPROBS = 20  # OpenAI's range for chat `top_logprobs`: 0..20
MAX_COMPLETION_LOGPROBS = 5  # and for the legacy completions' `logprobs`: 0..5


class _Wire(BaseModel):
    # Nested objects keep OpenAI's leniency (clients send extra message fields: `refusal`, `audio`, ...);
    # unknown top-level fields are refused by fields.py before these models run.
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Wire):
    type: str
    text: str | None = None
    image_url: dict[str, Any] | None = None


class ChatMessage(_Wire):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Wire):
    include_usage: bool | None = None


class _Sampling(_Wire):
    model: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=8)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None  # OpenAI's range
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # Extensions of vLLM and TGI (huggingface_hub, LangChain's and LiteLLM's vLLM clients send them).
    repetition_penalty: float | None = Field(None, gt=0.0)
    top_k: int | None = Field(None, ge=-1)  # vLLM: -1 (or 0) means "all tokens"
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    typical_p: float | None = Field(None, gt=0.0, le=1.0)
    ignore_eos: bool | None = None
    include_stop_str_in_output: bool | None = None
    truncate_prompt_tokens: int | None = Field(None, ge=1)
    do_sample: bool | None = None  # TGI's; false is greedy (huggingface.js sends TGI's parameters here)
    # vLLM's: computed prompt prefixes are reused only between requests with the same salt
    cache_salt: str | None = Field(None, min_length=1, max_length=256)
    # Structured outputs: OpenAI's response_format (also TGI's grammar form, which huggingface_hub sends),
    # vLLM's guided_* and structured_outputs, TGI's grammar. At most one of them (convert.py checks).
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    structured_outputs: dict[str, Any] | None = None
    grammar: dict[str, Any] | None = None


class ChatCompletionRequest(_Sampling):
    model_config = ConfigDict(extra="ignore", json_schema_extra=closed_schema)

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)
    # vLLM's: how the chat template is applied.
    add_generation_prompt: bool | None = None
    add_special_tokens: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


_TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_PROMPT_FORMS: list[Any] = [
    {"type": "string", "minLength": 1},
    {**_TOKEN_IDS, "description": "token ids of the model's vocabulary, run as sent"},
    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 4},
    {"type": "array", "items": _TOKEN_IDS, "minItems": 1, "maxItems": 4},
]


class CompletionRequest(_Sampling):
    model_config = ConfigDict(extra="ignore", json_schema_extra=closed_schema)

    # A string, a list of strings, token ids, or a list of token-id lists (OpenAI's four forms): checked by
    # convert.py, whose message says which forms there are (a union's error lists every branch it tried).
    prompt: Any = Field(json_schema_extra={"anyOf": _PROMPT_FORMS})
    max_tokens: int | None = Field(None, ge=0)  # 0 with `echo`: the prompt's logprobs only
    suffix: str | None = None
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    best_of: int | None = None
    add_special_tokens: bool | None = None
