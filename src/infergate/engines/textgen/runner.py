"""ModelRunner: the only place that calls the model's forward pass. One sequence per call for now;
the engine issue replaces this with batched forwards over a shared KV cache."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from infergate.engines.textgen.loader import LoadedModel

__all__ = ["ModelRunner"]


class ModelRunner:
    def __init__(self, loaded: LoadedModel) -> None:
        self.model = loaded.model
        self.device = loaded.device

    @torch.inference_mode()
    def prefill(self, ids: list[int], prompt_logprobs: bool) -> tuple[torch.Tensor, Any, list[float | None]]:
        """Run the prompt; return the next-token logits, the KV cache, and (if asked) each prompt token's
        logprob given the tokens before it (the first has none)."""
        cache = DynamicCache()
        input_ids = torch.tensor([ids], device=self.device)
        keep = 0 if prompt_logprobs else 1  # 0 keeps every position's logits
        out = self.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=keep)
        logits = out.logits[0].float()
        lps: list[float | None] = []
        if prompt_logprobs:
            logp = torch.log_softmax(logits[:-1], dim=-1)
            picked = logp.gather(1, input_ids[0, 1:].unsqueeze(1)).squeeze(1)
            lps = [None, *picked.tolist()]
        return logits[-1], cache, lps

    @torch.inference_mode()
    def decode(self, token_id: int, cache: Any) -> torch.Tensor:
        input_ids = torch.tensor([[token_id]], device=self.device)
        out = self.model(input_ids=input_ids, cache=cache, use_cache=True)
        return out.logits[0, -1].float()
