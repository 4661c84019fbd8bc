"""Turn a catalog ``source`` into a tokenizer and a model, through transformers' ordinary loading path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infergate.engines.sources import resolve_source

__all__ = ["LoadedModel", "choose_dtype", "load_causal_lm"]


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str


def choose_dtype(name: str, device: str) -> Any:
    """``auto``: bfloat16 on a GPU and on CPUs that compute it natively (AVX512-BF16, AMX), float32 elsewhere.

    A decode step streams every weight from memory, so bfloat16 halves both the weights' memory and the
    step's time on a CPU that does not emulate it (1.2-1.6x the tokens/s of float32 here, bench/RESULTS.md).
    Greedy output stays the same alone and in any batch either way (see kvslots and packed).
    """
    import torch

    if name == "auto":
        if device == "cuda":
            return torch.bfloat16
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return torch.bfloat16 if native else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_causal_lm(source: str, threads: int | None, dtype: str = "auto") -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    location, kwargs = resolve_source(source)
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(location, dtype=choose_dtype(dtype, device), **kwargs)
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=device)
