"""Choose the next token for one sequence from its logits, with that request's own parameters and generator.

The warpers are transformers' own (temperature, top-k, top-p, typical-p, min-p, repetition penalty); frequency and
presence penalties (OpenAI's) and logit bias are added here. A request's seed drives a private
torch.Generator, so the same seed gives the same text whatever else the engine is running.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from infergate.core.params import SamplingParams

__all__ = ["Choice", "TokenChooser"]


_MIN_TEMPERATURE = 1e-5


@dataclass(frozen=True, slots=True)
class Choice:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


class TokenChooser:
    def __init__(self, params: SamplingParams, prompt_ids: list[int], vocab_size: int, top_n: int = 0) -> None:
        self.params = params
        self.top_n = top_n
        self.seed: int | None = None
        self.generator: torch.Generator | None = None
        if params.do_sample:
            self.seed = params.seed if params.seed is not None else random.getrandbits(63)
            self.generator = torch.Generator().manual_seed(self.seed)
        # Every token seen so far (prompt + generated), for the repetition penalty as transformers defines it.
        self._history = list(prompt_ids)
        self._counts: torch.Tensor | None = None
        if params.frequency_penalty or params.presence_penalty:
            self._counts = torch.zeros(vocab_size)
        self._bias: torch.Tensor | None = None
        if params.logit_bias:
            self._bias = torch.zeros(vocab_size)
            for token_id, bias in params.logit_bias:
                if 0 <= token_id < vocab_size:
                    self._bias[token_id] = bias
        self._penalties = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            self._penalties.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        self._warpers = LogitsProcessorList()
        if params.do_sample:
            if params.temperature != 1.0:
                # A positive temperature is valid (TGI's rule), but below the floor logits / t overflow to inf and
                # the softmax gives NaN; at the floor the choice is already the greedy one.
                self._warpers.append(TemperatureLogitsWarper(max(params.temperature, _MIN_TEMPERATURE)))
            if params.top_k is not None:
                self._warpers.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                self._warpers.append(TopPLogitsWarper(params.top_p))
            if params.typical_p < 1.0:
                self._warpers.append(TypicalLogitsWarper(params.typical_p))
            if params.min_p > 0.0:
                self._warpers.append(MinPLogitsWarper(params.min_p))

    def _history_tensor(self) -> torch.LongTensor:
        return torch.tensor([self._history], dtype=torch.long)  # type: ignore[return-value]

    def choose(self, logits: torch.Tensor, allowed: torch.Tensor | None = None) -> Choice:
        """Pick the next token from ``logits`` ([vocab], float32, on any device) and record it. ``allowed``
        (bool, [vocab]): the only tokens it may be (a grammar's); the logprobs are those of the masked scores,
        as vLLM reports them."""
        scores = logits.detach().to("cpu", torch.float32).unsqueeze(0)
        if allowed is not None:
            scores = scores.masked_fill(~allowed[: scores.shape[-1]], float("-inf"))
        if self._bias is not None:
            scores = scores + self._bias
        if self._penalties:
            scores = self._penalties(self._history_tensor(), scores)
        if self._counts is not None:
            scores = scores - self.params.frequency_penalty * self._counts
            scores = scores - self.params.presence_penalty * (self._counts > 0).float()
        if self.generator is not None:
            scores = self._warpers(self._history_tensor(), scores)
            probs = torch.softmax(scores, dim=-1)
            token_id = int(torch.multinomial(probs[0], 1, generator=self.generator).item())
        else:
            token_id = int(scores[0].numpy().argmax())  # the first maximum, as torch.argmax, at a tenth of its cost
        logprobs = torch.log_softmax(scores[0], dim=-1)
        top: tuple[tuple[int, float], ...] = ()
        if self.top_n:
            values, indices = torch.topk(logprobs, self.top_n)
            top = tuple(zip(indices.tolist(), values.tolist(), strict=True))
        self._history.append(token_id)
        if self._counts is not None:
            self._counts[token_id] += 1
        return Choice(token_id, float(logprobs[token_id].item()), top)
