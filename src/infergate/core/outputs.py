"""What engines produce: a stream of events per request, and the result that collecting it gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from infergate.core.params import FinishReason

__all__ = [
    "MIN_LOGPROB",
    "Embeddings",
    "GenerationResult",
    "PromptInfo",
    "StepEvent",
    "Token",
    "ToolCall",
    "collect",
]


@dataclass(frozen=True, slots=True)
class Embeddings:
    """One vector per input, and the tokens the model read (for usage and limits)."""

    vectors: list[list[float]]
    tokens: int


# The floor of a reported logprob. A token that top-k, top-p or min-p filtered out has a logprob of -inf, which
# JSON cannot carry (the response failed with a 500); vLLM reports such tokens at -9999.0, and so does this server.
MIN_LOGPROB = -9999.0


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    text: str
    logprob: float | None
    special: bool = False

    def __post_init__(self) -> None:
        if self.logprob is not None and not self.logprob >= MIN_LOGPROB:  # `not >=` also floors NaN
            object.__setattr__(self, "logprob", MIN_LOGPROB)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call of one of the request's tools, as the model made it: ``arguments`` is a JSON object, as text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class PromptInfo:
    """First event of every generation: the prompt as the model saw it.

    With ``prefill_details``: ``prefill`` has each prompt token (its text decoded alone, as TGI shows it; the
    first one's logprob is None), ``prefill_pieces`` the text each token adds to the prompt's decoded text (they
    join into that text exactly, a character split across tokens going to the token that completes it), and
    ``prefill_top`` each token's most likely alternatives (``top_n_tokens`` of them; none for the first).
    ``cached_tokens``: how many prompt tokens came computed from the prefix cache (None: the engine does not say)."""

    input_length: int
    seed: int | None
    prefill: tuple[Token, ...] = ()
    prefill_pieces: tuple[str, ...] = ()
    prefill_top: tuple[tuple[Token, ...], ...] = ()
    cached_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class StepEvent:
    """One generated token. ``text`` is the new text it adds (may be empty while a character or a possible
    stop sequence is incomplete); the last event of a generation has ``finish_reason`` set. A remote engine
    that learns the prompt's length only at the end of a stream puts it in the last event's ``prompt_tokens``
    (and the prompt tokens the engine had cached in ``cached_tokens``). The model's tool calls come whole, in
    the last event's ``tool_calls`` (its ``finish_reason`` is then "tool_calls"); the text of a call is never
    part of ``text``."""

    index: int
    token: Token
    text: str
    top_tokens: tuple[Token, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(slots=True)
class GenerationResult:
    text: str
    finish_reason: FinishReason
    input_length: int
    seed: int | None
    tokens: list[Token] = field(default_factory=list)
    top_tokens: list[tuple[Token, ...]] = field(default_factory=list)
    prefill: tuple[Token, ...] = ()
    prefill_pieces: tuple[str, ...] = ()
    prefill_top: tuple[tuple[Token, ...], ...] = ()
    cached_tokens: int | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens)

    @property
    def logprob_sum(self) -> float:
        return sum(t.logprob or 0.0 for t in self.tokens)


async def collect(events: AsyncIterator[PromptInfo | StepEvent]) -> GenerationResult:
    """Drain one generation's events into its result."""
    info: PromptInfo | None = None
    result: GenerationResult | None = None
    parts: list[str] = []
    async for event in events:
        if isinstance(event, PromptInfo):
            info = event
            result = GenerationResult(
                "",
                "length",
                event.input_length,
                event.seed,
                prefill=event.prefill,
                prefill_pieces=event.prefill_pieces,
                prefill_top=event.prefill_top,
                cached_tokens=event.cached_tokens,
            )
            continue
        assert result is not None, "engines send PromptInfo first"
        parts.append(event.text)
        result.tokens.append(event.token)
        if event.top_tokens:
            result.top_tokens.append(event.top_tokens)
        if event.finish_reason is not None:
            result.finish_reason = event.finish_reason
        if event.prompt_tokens is not None:
            result.input_length = event.prompt_tokens
        if event.cached_tokens is not None:
            result.cached_tokens = event.cached_tokens
        result.tool_calls += event.tool_calls
    if result is None or info is None:
        raise RuntimeError("generation ended before it started")
    result.text = "".join(parts)
    return result
