"""The prompt's logprobs (TGI's decoder_input_details, OpenAI's echo) from its logits, whatever the chunks."""

from __future__ import annotations

import asyncio

import pytest
import torch

from infergate.core.requests import GenerationRequest
from infergate.engines.textgen.sequence import Sequence

PROMPT = [5, 3, 9, 1, 7, 2, 8]
VOCAB = 11


def sequence(top_n: int) -> Sequence:
    loop = asyncio.new_event_loop()
    try:
        request = GenerationRequest("p", top_n_tokens=top_n, prefill_details=True)
        return Sequence(request, len(PROMPT), list(PROMPT), 1, loop, asyncio.Queue())
    finally:
        loop.close()


@pytest.mark.parametrize("chunks", [[7], [4, 3], [1, 1, 5], [3, 3, 1], [6, 1]])
def test_chunked_prompt_logprobs_are_those_of_the_whole_prompt(chunks: list[int]) -> None:
    logits = torch.randn(len(PROMPT), VOCAB, generator=torch.Generator().manual_seed(0))
    logp = torch.log_softmax(logits, dim=-1)
    seq = sequence(top_n=2)
    start = 0
    for n in chunks:
        seq.record_prompt_logprobs(start, logits[start : start + n])
        start += n
    # Token i's logprob comes from position i - 1; the first has none.
    assert seq.prompt_logprobs[0] is None
    expected = [float(logp[i - 1, PROMPT[i]]) for i in range(1, len(PROMPT))]
    assert seq.prompt_logprobs[1:] == pytest.approx(expected)
    assert len(seq.prompt_tops) == len(PROMPT) and seq.prompt_tops[0] == ()
    for i in range(1, len(PROMPT)):
        values, ids = torch.topk(logp[i - 1], 2)
        assert [t for t, _ in seq.prompt_tops[i]] == ids.tolist()
        assert [lp for _, lp in seq.prompt_tops[i]] == pytest.approx(values.tolist())


def test_without_top_n_no_alternatives_are_kept() -> None:
    seq = sequence(top_n=0)
    seq.record_prompt_logprobs(0, torch.zeros(len(PROMPT), VOCAB))
    assert seq.prompt_tops == [()] * len(PROMPT)
    seq.forget_prompt_logprobs()
    assert seq.prompt_logprobs == [] and seq.prompt_tops == []
