"""Wire models of TGI's GenerateRequest. ``null`` anywhere means "absent" (old clients send nulls)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GenerateParameters", "GenerateRequest"]


class _Wire(BaseModel):
    # strict: "0.5" is not a number and 1 is not a bool; unknown keys are ignored as TGI (serde) does.
    model_config = ConfigDict(strict=True, extra="ignore")


class GenerateParameters(_Wire):
    best_of: int | None = None
    decoder_input_details: bool | None = None
    details: bool | None = None
    do_sample: bool | None = None
    frequency_penalty: float | None = None
    grammar: Any = None
    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    return_full_text: bool | None = None
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    stop: list[str] | None = None
    stop_sequences: list[str] | None = None  # the announcement's name for `stop`
    temperature: float | None = None
    top_k: int | None = None
    top_n_tokens: int | None = None
    top_p: float | None = None
    truncate: int | None = None
    typical_p: float | None = None
    watermark: bool | None = None
    adapter_id: str | None = None


class GenerateRequest(_Wire):
    inputs: str
    parameters: GenerateParameters | None = None
    stream: bool | None = None
    options: dict[str, Any] | None = None
