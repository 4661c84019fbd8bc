"""Validated generation parameters. Built only by protocols/*/convert after every rule has been checked."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FinishReason", "SamplingParams", "StoppingParams"]

# TGI's finish reasons; protocol adapters map them to their own words.
FinishReason = str  # "length" | "eos_token" | "stop_sequence" | "tool_calls"


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to choose each next token. ``do_sample=False`` is greedy; the other fields then only shape logprobs."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    typical_p: float = 1.0
    min_p: float = 0.0  # keep tokens at least this fraction as likely as the most likely one (vLLM's)
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class StoppingParams:
    """When a sequence ends. ``max_new_tokens=None``: the caller named none, and the gateway applies the server's
    default (`engine.default_max_tokens`, within the tier's cap); an engine called directly with None generates
    up to the model's context length. The protocols apply their own defaults (TGI's 20, OpenAI completions' 16)."""

    max_new_tokens: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    # TGI keeps the stop sequence in the text; OpenAI leaves it out.
    include_stop_in_output: bool = True
    ignore_eos: bool = False
    # A default chosen by the server rather than asked for: shorten it to fit the context instead of a 422.
    clamp_to_context: bool = False
