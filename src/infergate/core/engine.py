"""The seam between the gateway and whatever runs a model. Kept narrow on purpose (TGI's shard has 8 calls)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from infergate.core.outputs import Embeddings, PromptInfo, StepEvent
from infergate.core.requests import EmbedRequest, GenerationRequest, ImageRequest

__all__ = [
    "Embedder",
    "EngineState",
    "EngineStats",
    "ImageGenerator",
    "ModelEngine",
    "ModelLimits",
    "PrefixCacheStats",
    "PipelineRunner",
    "Replicated",
    "ReplicaStatus",
    "TextGenerator",
    "TokenSpan",
]


@dataclass(frozen=True, slots=True)
class EngineState:
    """``status`` is one of "idle" (not started), "loading", "ready", "failed", "stopped"."""

    status: str
    error: str | None = None
    estimated_time: float = 0.0


@dataclass(slots=True)
class PrefixCacheStats:
    """A text generation engine's prefix cache, as /metrics shows it (counters since the engine started)."""

    lookups: int = 0  # sequences that looked for a computed prefix
    hits: int = 0  # ... and started from one
    queried_tokens: int = 0  # prompt tokens they could have reused
    hit_tokens: int = 0  # prompt tokens they did reuse
    evictions: int = 0  # entries dropped for room
    entries: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class EngineStats:
    active: int
    waiting: int
    cached_tokens: int = 0  # positions the running sequences hold in the KV cache
    prefix: PrefixCacheStats | None = None  # None: the engine has no prefix cache
    grammars_compiled: int | None = None  # grammars compiled since the model loaded (None: it compiles none)
    load_s: float | None = None  # seconds the model's last load in this process took (None: none finished)


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
class ModelEngine(Protocol):
    """What every engine offers the gateway: its tasks, its load state and its load."""

    compute_type: str
    tasks: frozenset[str]  # the pipeline tags it answers; the first one is the catalog's

    def start(self) -> None:
        """Begin loading (no-op once started)."""

    def state(self) -> EngineState: ...

    def stats(self) -> EngineStats: ...

    async def wait_ready(self, timeout: float) -> None: ...

    def memory_bytes(self) -> int:
        """What the loaded model holds (0 when not loaded)."""


@runtime_checkable
class TextGenerator(ModelEngine, Protocol):
    """A text generation engine.

    ``generate`` yields one PromptInfo, then StepEvents until one carries a finish reason (none at all when
    ``stopping.max_new_tokens`` is 0: the prompt only). Leaving the
    iterator early (a client that went away) aborts the request: the engine frees its place at the next step.
    It raises core.errors (ValidationError for prompts that do not fit, OverloadedError, ModelLoadingError...).
    It formats the prompt the request describes: ``messages`` with the chat template, ``suffix`` as fill in the
    middle (ValidationError for a model without a template or infill tokens).
    """

    runner: str  # what computes the tokens: "torch" or "llama.cpp"

    def limits(self) -> ModelLimits: ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[PromptInfo | StepEvent, None]: ...

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[TokenSpan]: ...

    def infill_format(self) -> str | None:
        """The loaded model's infill format ("codellama", "starcoder", ...), or None."""


@runtime_checkable
class Embedder(ModelEngine, Protocol):
    """A sentence embedding engine (feature-extraction and sentence-similarity)."""

    async def embed(self, request: EmbedRequest) -> Embeddings:
        """One vector per input, in order; ValidationError for inputs too long without ``truncate``."""

    async def similarity(self, source: str, sentences: list[str]) -> tuple[list[float], int]:
        """The model's similarity of ``source`` to each sentence, and the tokens read."""


@runtime_checkable
class PipelineRunner(ModelEngine, Protocol):
    """A transformers pipeline task (fill-mask, text-classification, summarization, ...)."""

    async def run(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        """The pipeline's answer as JSON-able values; BadRequestError for inputs the pipeline refuses."""


@runtime_checkable
class ImageGenerator(ModelEngine, Protocol):
    """A text-to-image engine (a diffusers pipeline)."""

    async def text_to_image(self, request: ImageRequest) -> tuple[bytes, int]:
        """The image encoded as ``request.format``, and the seed it was made with (random when none was given);
        ValidationError for a scheduler the model cannot use."""


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One replica of a remote model, as /v1/models, `infergate models list` and /metrics show it. ``state`` is
    "up", "ejected" (failed; out until a probe answers or the ejection ends) or "cooling" (said 429/503)."""

    url: str
    state: str
    in_flight: int
    last_error: str | None
    requests: int
    errors: int
    retries: int
    ejections: int
    latency_sum_s: float
    latency_count: int


@runtime_checkable
class Replicated(Protocol):
    """An engine that spreads requests over replicas elsewhere."""

    def replica_views(self) -> list[ReplicaStatus]: ...
