"""Resolve a model id to its catalog entry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from infergate.core.errors import ModelNotFoundError

__all__ = ["Catalog", "ModelSpec", "is_gguf_source"]


def is_gguf_source(source: str) -> bool:
    """Whether a catalog ``source`` names a GGUF file (by its name: nothing is read or assembled)."""
    return source.endswith(".gguf") or source.startswith("assemble:")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    task: str
    source: str
    load_at_startup: bool = True
    max_total_tokens: int | None = None
    tiers: tuple[str, ...] | None = None  # who may use it; None: every tier


class Catalog:
    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs = {spec.id: spec for spec in specs}
        if not self._specs:
            raise ValueError("the catalog is empty: add a [[models]] table to the config file")

    def resolve(self, model_id: str | None) -> ModelSpec:
        """``None`` (the `POST /` route, or OpenAI's `model` left out) means the first model in the catalog."""
        if model_id is None:
            return next(iter(self._specs.values()))
        try:
            return self._specs[model_id]
        except KeyError:
            raise ModelNotFoundError(model_id, list(self._specs)) from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._specs.values())

    @property
    def default(self) -> ModelSpec:
        return next(iter(self._specs.values()))
