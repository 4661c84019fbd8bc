"""The seam between the engine and a model runner: rows of tokens in, logits out, a KV cache row per sequence.

The engine (scheduler, sampling, stops, detokenization) is shared; a runner only turns "these tokens for these
cache rows" into logits and keeps each row's KV cache. ``runner.BatchRunner`` runs transformers models on
PyTorch; ``llamacpp.LlamaCppRunner`` runs GGUF models on llama.cpp. Only the one a model uses is imported
(transformers' modeling code alone is 120 MB of memory a llama.cpp server does not need).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

__all__ = ["ModelRunner", "RowCache", "RowInput"]


@dataclass(frozen=True, slots=True)
class RowInput:
    """One row of a forward: feed ``tokens`` at positions ``start ..``; ``all_logits`` keeps every position's."""

    tokens: list[int]
    start: int
    all_logits: bool = False


class RowCache(Protocol):
    """The KV cache as the engine sees it: ``rows`` x ``capacity`` positions, one row per admitted sequence."""

    rows: int
    capacity: int

    @property
    def bytes_per_token(self) -> int: ...

    def resize(self, rows: int, capacity: int, keep: int, keep_len: int) -> bool:
        """Hold ``rows x capacity`` positions, keeping the first ``keep`` rows' first ``keep_len`` positions;
        True if it could not keep them (the engine then recomputes those sequences)."""

    def move_row(self, src: int, dst: int, length: int) -> None:
        """Row ``src``'s first ``length`` positions become row ``dst``'s (``dst`` was released)."""

    def release(self, row: int) -> None:
        """The sequence in ``row`` left: its positions are free."""

    def save(self, row: int, length: int) -> tuple[Any, int]:
        """A copy of the row's first ``length`` positions, kept apart from the rows, and its size in bytes. The
        row is about to be released: its positions past ``length`` may be dropped."""

    def load(self, row: int, saved: Any, length: int) -> bool:
        """The row's first ``length`` positions from a :meth:`save` copy; False if this cache cannot take it."""

    def copy_row(self, src: int, dst: int, length: int) -> None:
        """Row ``dst``'s first ``length`` positions become those of row ``src``, which keeps its own."""


class ModelRunner(Protocol):
    """What the engine needs from a loaded model."""

    device: str  # "cpu" or "cuda"
    name: str  # "torch" or "llama.cpp", as the catalog names it
    tokenizer: Any  # a transformers tokenizer for the same vocabulary the runner decodes
    min_rows: int  # a decode step runs at least this many rows (padding rows produce no logits)
    mixed_batches: bool  # prompt chunks and decode tokens may share a forward without changing any row's logits
    length_step: int  # rows grow in whole steps of this many positions
    # A row that starts from a copied prefix whose length is a multiple of this computes the rest exactly as a
    # row that computed the whole prompt (1: any length; llama.cpp computes a row's prompt in aligned blocks).
    exact_step: int
    vocab_size: int  # width of the logits
    eos_ids: frozenset[int]
    context_length: int | None  # what the model was trained for, if it says

    @property
    def cache(self) -> RowCache: ...

    def forward(self, first: int, rows: list[RowInput | None]) -> list[torch.Tensor | None]: ...

    def weight_bytes(self) -> int: ...

    def held_tokens(self) -> int | None:
        """Positions the KV cache holds, as the library that keeps it says; None where only the engine knows."""

    def close(self) -> None:
        """Free the model (the engine drops the runner afterwards)."""
