"""The tasks (pipeline tags) infergate serves, by the kind of engine that runs them."""

from __future__ import annotations

__all__ = ["ALL_TASKS", "EMBEDDING_TASKS", "PIPELINE_TASKS", "TEXT_GENERATION", "TEXT_TO_IMAGE"]

TEXT_GENERATION = "text-generation"
TEXT_TO_IMAGE = "text-to-image"
EMBEDDING_TASKS = frozenset({"feature-extraction", "sentence-similarity"})
PIPELINE_TASKS = frozenset(
    {
        "fill-mask",
        "text-classification",
        "token-classification",
        "zero-shot-classification",
        "question-answering",
        "summarization",
        "translation",
        "text2text-generation",
    }
)
ALL_TASKS = frozenset({TEXT_GENERATION, TEXT_TO_IMAGE}) | EMBEDDING_TASKS | PIPELINE_TASKS
