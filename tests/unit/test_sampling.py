"""TokenChooser on small CPU logits: greedy, seeded sampling, top-n, penalties and logit bias."""

from __future__ import annotations

import pytest
import torch

from infergate.core.params import SamplingParams
from infergate.engines.textgen.sampling import TokenChooser

VOCAB = 50


def random_logits(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(VOCAB, generator=g) * 2 for _ in range(n)]


def choices(params: SamplingParams, logits: list[torch.Tensor], prompt_ids: list[int] | None = None) -> list[int]:
    chooser = TokenChooser(params, prompt_ids or [], VOCAB)
    return [chooser.choose(x).token_id for x in logits]


def peaked(scores: dict[int, float]) -> torch.Tensor:
    """Logits of -5 everywhere except the given ids."""
    x = torch.full((VOCAB,), -5.0)
    for token_id, value in scores.items():
        x[token_id] = value
    return x


def test_greedy_picks_argmax_with_its_logprob() -> None:
    chooser = TokenChooser(SamplingParams(), [], VOCAB)
    assert chooser.seed is None  # greedy needs no seed
    for x in random_logits(10):
        choice = chooser.choose(x)
        assert choice.token_id == int(torch.argmax(x))
        assert choice.logprob == pytest.approx(float(torch.log_softmax(x, -1)[choice.token_id]), abs=1e-6)
        assert choice.top == ()


def test_same_seed_same_choices_different_seed_differs() -> None:
    logits = random_logits(20, seed=1)
    flat = [x / 4 for x in logits]  # flatter, so draws really vary
    a = choices(SamplingParams(do_sample=True, seed=123), flat)
    b = choices(SamplingParams(do_sample=True, seed=123), flat)
    c = choices(SamplingParams(do_sample=True, seed=124), flat)
    assert a == b
    assert a != c
    assert a != [int(torch.argmax(x)) for x in flat]  # it really samples


def test_unseeded_sampling_reports_a_reusable_seed() -> None:
    flat = [x / 4 for x in random_logits(20, seed=2)]
    chooser = TokenChooser(SamplingParams(do_sample=True), [], VOCAB)
    assert isinstance(chooser.seed, int) and chooser.seed >= 0
    first = [chooser.choose(x).token_id for x in flat]
    assert choices(SamplingParams(do_sample=True, seed=chooser.seed), flat) == first
    other = TokenChooser(SamplingParams(do_sample=True), [], VOCAB)
    assert other.seed != chooser.seed


def test_top_k_one_is_greedy() -> None:
    logits = random_logits(20, seed=3)
    sampled = choices(SamplingParams(do_sample=True, top_k=1, seed=9), logits)
    assert sampled == [int(torch.argmax(x)) for x in logits]


def test_top_n_pairs_sorted() -> None:
    chooser = TokenChooser(SamplingParams(), [], VOCAB, top_n=3)
    x = random_logits(1, seed=4)[0]
    choice = chooser.choose(x)
    assert len(choice.top) == 3
    ids = [i for i, _ in choice.top]
    logprobs = [lp for _, lp in choice.top]
    assert logprobs == sorted(logprobs, reverse=True)
    assert ids == torch.topk(x, 3).indices.tolist()
    assert ids[0] == choice.token_id and logprobs[0] == pytest.approx(choice.logprob)
    expected = torch.log_softmax(x, -1)
    for token_id, lp in choice.top:
        assert lp == pytest.approx(float(expected[token_id]), abs=1e-6)


def test_repetition_penalty_lowers_a_prompt_token() -> None:
    x = peaked({3: 2.0, 7: 1.5})
    plain = TokenChooser(SamplingParams(), [3], VOCAB, top_n=VOCAB).choose(x)
    penalised = TokenChooser(SamplingParams(repetition_penalty=2.0), [3], VOCAB, top_n=VOCAB).choose(x)
    assert plain.token_id == 3
    assert penalised.token_id == 7  # 2.0 / 2 < 1.5
    assert dict(penalised.top)[3] < dict(plain.top)[3]
    # A token not in the history keeps its score.
    unseen = TokenChooser(SamplingParams(repetition_penalty=2.0), [11], VOCAB).choose(x)
    assert unseen.token_id == 3


def test_repetition_penalty_counts_generated_tokens() -> None:
    x = peaked({3: 2.0, 7: 1.5})
    assert choices(SamplingParams(repetition_penalty=2.0), [x, x, x]) == [3, 7, 3]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # Each use costs 1.0 more: 3 (2.0) -> 7 (1.5) -> 3 (1.0 vs 0.5) -> 7 (0.0 vs 0.5).
        (SamplingParams(frequency_penalty=1.0), [3, 7, 3, 7]),
        # A flat 1.0 once used: after both were used, 3 (1.0) stays ahead of 7 (0.5).
        (SamplingParams(presence_penalty=1.0), [3, 7, 3, 3]),
    ],
)
def test_frequency_and_presence_penalties_change_choices_after_repeats(
    params: SamplingParams, expected: list[int]
) -> None:
    x = peaked({3: 2.0, 7: 1.5})
    assert choices(SamplingParams(), [x] * 4) == [3, 3, 3, 3]
    assert choices(params, [x] * 4) == expected


def test_frequency_penalty_ignores_the_prompt() -> None:
    # OpenAI's penalties count generated tokens only (repetition_penalty is the one that sees the prompt).
    x = peaked({3: 2.0, 7: 1.5})
    assert choices(SamplingParams(frequency_penalty=1.0), [x], prompt_ids=[3, 3, 3]) == [3]


def test_logit_bias_forces_a_token() -> None:
    logits = random_logits(10, seed=5)
    assert choices(SamplingParams(logit_bias=((17, 100.0),)), logits) == [17] * 10
    assert choices(SamplingParams(do_sample=True, seed=1, logit_bias=((17, 100.0),)), logits) == [17] * 10
    # -100 bans a token even where it is the argmax.
    top = int(torch.argmax(logits[0]))
    assert choices(SamplingParams(logit_bias=((top, -100.0),)), logits[:1]) != [top]


def test_logit_bias_outside_the_vocab_is_ignored() -> None:
    logits = random_logits(3, seed=6)
    params = SamplingParams(logit_bias=((VOCAB + 5, 100.0), (-1, 100.0)))
    assert choices(params, logits) == [int(torch.argmax(x)) for x in logits]


def test_low_temperature_sampling_concentrates_on_argmax() -> None:
    logits = random_logits(20, seed=7)
    sampled = choices(SamplingParams(do_sample=True, temperature=0.001, seed=3), logits)
    assert sampled == [int(torch.argmax(x)) for x in logits]


def test_the_smallest_positive_temperature_samples_the_argmax_instead_of_failing() -> None:
    """5e-324 is a valid temperature (strictly positive); logits / t would overflow to inf and the softmax to NaN."""
    logits = random_logits(5, seed=8)
    sampled = choices(SamplingParams(do_sample=True, temperature=5e-324, seed=1), logits)
    assert sampled == [int(torch.argmax(x)) for x in logits]
