"""The engine-neutral request types that engines accept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infergate.core.params import SamplingParams, StoppingParams

__all__ = ["EmbedRequest", "GenerationRequest", "Grammar", "ImageRequest", "ToolChoice"]


@dataclass(frozen=True, slots=True)
class Grammar:
    """A shape the generated text must have, enforced token by token (constrained decoding).

    ``kind``: "json" (``value`` is a JSON schema, as JSON text; ``{}`` or ``{"type": "object"}`` for any JSON
    value or object), "regex" (the whole output matches it) or "lark" (a context-free grammar in Lark syntax,
    llguidance's dialect, which may embed JSON schemas with ``%json {...}``), "gbnf" (llama.cpp's grammars).
    ``source``: the request field it came from, which an error about it names."""

    kind: str
    value: str
    source: str = "grammar"


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Whether the model may or must call one of the request's tools: ``mode`` "auto" (it decides), "required"
    (at least one call) or "none"; ``name`` forces a call of that function."""

    mode: str = "auto"
    name: str | None = None
    parallel: bool = True  # several calls in one answer


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One text generation: a prompt plus validated parameters.

    ``prompt_ids``, when given, are the prompt's tokens as the caller sent them (OpenAI's token-id prompts): the
    engine runs them as they are and ``prompt`` is not tokenized. ``truncate`` keeps only the last N prompt
    tokens. ``top_n_tokens`` asks for the N most likely alternatives at each step; ``prefill_details`` for the
    prompt tokens with their logprobs (and their top ``top_n_tokens`` alternatives).
    ``stopping.max_new_tokens == 0`` runs the prompt only: the generation ends after its PromptInfo.
    ``messages``, on a chat request, are the conversation to answer (``prompt`` is then empty): the engine
    renders them with the model's chat template, or sends them to a remote engine that applies its own.
    ``suffix`` asks for fill in the middle between ``prompt`` and it, in the model family's infill format.
    The engine formats prompts because only it knows the model's template and special tokens.
    ``cache_salt`` (vLLM's name): the engine reuses computed prompt prefixes only between requests with the same
    salt, so that one caller cannot learn from its own speed or ``cached_tokens`` what another one sent.
    ``grammar`` constrains the output (structured outputs). ``tools`` are OpenAI function definitions
    (``{"type": "function", "function": {"name", "description", "parameters"}}``) that the chat template presents
    to the model; the engine recognises the model's calls of them and returns them as tool calls.
    """

    prompt: str
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stopping: StoppingParams = field(default_factory=StoppingParams)
    truncate: int | None = None
    top_n_tokens: int = 0
    prefill_details: bool = False
    add_special_tokens: bool = True
    priority: int = 0
    prompt_ids: tuple[int, ...] | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    add_generation_prompt: bool = True
    suffix: str | None = None
    cache_salt: str | None = None
    grammar: Grammar | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: ToolChoice = field(default_factory=ToolChoice)


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """Sentence embeddings with TEI's options. ``truncate`` cuts inputs longer than the model reads (from the
    ``truncation_direction`` side) instead of refusing them; ``dimensions`` keeps the first N (Matryoshka)."""

    inputs: tuple[str, ...]
    normalize: bool = True
    truncate: bool = False
    truncation_direction: str = "right"
    prompt_name: str | None = None
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """Text-to-image with the HF API's parameters; None leaves the model's own default. ``format`` is the
    encoding of the answer (png, jpeg or webp), chosen from the caller's Accept header."""

    prompt: str
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    seed: int | None = None
    scheduler: str | None = None
    format: str = "jpeg"
