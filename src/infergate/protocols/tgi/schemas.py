"""Wire models of TGI's GenerateRequest. ``null`` anywhere means "absent" (old clients send nulls).

These models parse the body. Their bounds are TGI's rules, checked in ``convert.validate_parameters`` with
TGI's own messages; so the bounds appear here as documentation only (``json_schema_extra``), never as
pydantic constraints that would answer in pydantic's words."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from infergate.core.engine import ModelLimits
from infergate.protocols.wire import OptionsField

__all__ = ["GenerateParameters", "GenerateRequest", "TokenizeRequest"]

_LIMITS = ModelLimits(max_total_tokens=0, max_input_tokens=0)  # the per-model limits every engine keeps


class _Wire(BaseModel):
    # strict: "0.5" is not a number and 1 is not a bool; unknown keys are ignored as TGI (serde) does.
    model_config = ConfigDict(strict=True, extra="ignore")


def _doc(description: str, **bounds: Any) -> Any:
    """An optional field whose bounds are documented, not enforced here (validate_parameters does)."""
    return Field(None, description=description, json_schema_extra=bounds or None)


def _grammar_form(types: list[str], value: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"enum": types}, "value": value},
        "required": ["type", "value"] if required else ["type"],
    }


class GenerateParameters(_Wire):
    best_of: int | None = _doc(
        "generate this many sequences and return the likeliest; above 1 it needs sampling, no `seed` and no streaming",
        minimum=1,
        maximum=_LIMITS.max_best_of,
    )
    decoder_input_details: bool | None = _doc("return the prompt's tokens and logprobs (not when streaming)")
    details: bool | None = _doc("return the generated tokens, finish reason and seed")
    do_sample: bool | None = _doc("sample instead of greedy decoding (a sampling parameter turns it on too)")
    frequency_penalty: float | None = _doc("penalty for tokens by how often they appeared", minimum=-2.0, maximum=2.0)
    grammar: Any = _doc(
        "the output's shape, enforced token by token: a JSON schema or a regular expression",
        oneOf=[
            {"type": "null"},
            _grammar_form(["json", "json_schema"], {"type": "object"}, required=True),
            _grammar_form(["json_object"], {"type": "object"}, required=False),
            _grammar_form(["regex"], {"type": "string", "minLength": 1}, required=True),
        ],
    )
    max_new_tokens: int | None = _doc(
        "tokens to generate, 20 when left out; at most the tier's max_new_tokens, and the prompt plus this at "
        "most the model's max_total_tokens (GET /info)",
        minimum=1,
    )
    repetition_penalty: float | None = _doc("1.0 is none", exclusiveMinimum=0)
    return_full_text: bool | None = _doc(
        "prefix the prompt to the answer (default: true on / and /models/{id}, false on /generate)"
    )
    seed: int | None = Field(None, ge=0, le=2**64 - 1, description="random seed for sampling")
    stop: list[str] | None = _doc("stop before these strings", maxItems=_LIMITS.max_stop_sequences)
    stop_sequences: list[str] | None = _doc(
        "the announcement's name for `stop` (used when `stop` is absent)", maxItems=_LIMITS.max_stop_sequences
    )
    temperature: float | None = _doc("sampling temperature (turns sampling on)", exclusiveMinimum=0)
    top_k: int | None = _doc("sample from the k likeliest tokens (turns sampling on)", minimum=1)
    top_n_tokens: int | None = _doc(
        "also return the n likeliest tokens at each step", minimum=0, maximum=_LIMITS.max_top_n_tokens
    )
    top_p: float | None = _doc("nucleus sampling (turns sampling on)", exclusiveMinimum=0, exclusiveMaximum=1)
    truncate: int | None = _doc(
        "keep only the prompt's last N tokens; at most the model's max_input_tokens (GET /info)", minimum=1
    )
    typical_p: float | None = _doc("typical sampling (turns sampling on)", exclusiveMinimum=0, exclusiveMaximum=1)
    watermark: bool | None = _doc("not supported: leave it out, null or false", enum=[False, None])
    adapter_id: str | None = _doc("not supported: this server serves no LoRA adapters", maxLength=0)


class GenerateRequest(_Wire):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": "Once upon a time", "parameters": {"max_new_tokens": 20}}]}
    )
    inputs: str = Field(description="the prompt", json_schema_extra={"minLength": 1})
    parameters: GenerateParameters | None = None
    stream: bool | None = Field(None, description="answer with Server-Sent Events (always on /generate_stream)")
    options: OptionsField = None


class TokenizeRequest(BaseModel):
    """`POST /tokenize`'s body (read by hand in http/routes/ops.py); a bare JSON string is the inputs too."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "Hello world"}]})
    inputs: str = Field(description="the text to split into tokens")
    model: str | None = Field(None, description="the model whose tokenizer to use; the default model when absent")
