"""The seam between the gateway and whatever runs a model. Kept narrow on purpose (TGI's shard has 8 calls)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from infergate.core.outputs import PromptInfo, StepEvent
from infergate.core.requests import GenerationRequest

__all__ = ["EngineState", "EngineStats", "ModelLimits", "TextGenerator", "TokenSpan"]


@dataclass(frozen=True, slots=True)
class EngineState:
    """``status`` is one of "idle" (not started), "loading", "ready", "failed", "stopped"."""

    status: str
    error: str | None = None
    estimated_time: float = 0.0


@dataclass(frozen=True, slots=True)
class EngineStats:
    active: int
    waiting: int


@dataclass(frozen=True, slots=True)
class ModelLimits:
    max_total_tokens: int
    max_input_tokens: int
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_best_of: int = 2


@dataclass(frozen=True, slots=True)
class TokenSpan:
    id: int
    text: str
    start: int
    stop: int


@runtime_checkable
class TextGenerator(Protocol):
    """A text generation engine.

    ``generate`` yields one PromptInfo, then StepEvents until one carries a finish reason. Leaving the
    iterator early (a client that went away) aborts the request: the engine frees its place at the next step.
    It raises core.errors (ValidationError for prompts that do not fit, OverloadedError, ModelLoadingError...).
    """

    compute_type: str

    def start(self) -> None:
        """Begin loading (no-op once started)."""

    def state(self) -> EngineState: ...

    def stats(self) -> EngineStats: ...

    def limits(self) -> ModelLimits: ...

    async def wait_ready(self, timeout: float) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[PromptInfo | StepEvent, None]: ...

    async def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str: ...

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[TokenSpan]: ...
