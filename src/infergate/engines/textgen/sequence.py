"""One request inside the engine: its tokens, how many of them the KV cache holds, and what it has sent.

The step loop feeds ``tokens[cached:]`` (a prompt chunk, or the one token sampled last) and, once every token
is cached, turns the logits into the next token here: sampling, detokenization, stop sequences, end tokens and
the events the request's caller reads. A sequence that lost its cache (preempted) keeps its tokens and
simply runs them again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from infergate.core.errors import GenerationError
from infergate.core.outputs import PromptInfo, StepEvent, Token, ToolCall
from infergate.core.requests import GenerationRequest
from infergate.engines.textgen import tools
from infergate.engines.textgen.constrain import Constraint
from infergate.engines.textgen.detokenize import IncrementalDetokenizer
from infergate.engines.textgen.sampling import TokenChooser
from infergate.engines.textgen.stopping import StopMatcher

__all__ = ["Outbox", "Sequence", "Vocabulary"]

_order = itertools.count()


@dataclass(frozen=True)
class Vocabulary:
    """What the engine knows about the model's tokens."""

    tokenizer: Any
    size: int
    special_ids: frozenset[int]
    eos_ids: frozenset[int]

    def token(self, token_id: int, logprob: float | None) -> Token:
        return Token(token_id, self.tokenizer.decode([token_id]), logprob, token_id in self.special_ids)


class Outbox:
    """The events of one engine step, handed to the event loop in one wake-up rather than one per sequence
    (each wake-up is a write to the loop's self-pipe and a GIL hand-over: 0.1-0.2 ms)."""

    def __init__(self) -> None:
        self._items: list[tuple[Sequence, object]] = []

    def add(self, seq: Sequence, item: object) -> None:
        self._items.append((seq, item))

    def flush(self) -> None:
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Sequence, object]]] = {}
        for seq, item in items:
            by_loop.setdefault(seq.loop, []).append((seq, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening any more
                for seq, _ in batch:
                    seq.cancelled = True


def _deliver(batch: list[tuple[Sequence, object]]) -> None:
    for seq, item in batch:
        seq.mailbox.put_nowait(item)


def _pieces(tokenizer: Any, ids: list[int]) -> tuple[str, ...]:
    """The text each token adds to the decoded ``ids`` (TGI's decode_token, from the first token on)."""
    detok = IncrementalDetokenizer(tokenizer, [])
    pieces = [detok.push(i) for i in ids]
    if pieces:
        pieces[-1] += detok.flush()
    return tuple(pieces)


@dataclass(eq=False)
class Sequence:
    """Touched by the step loop only, except ``cancelled`` (set by the request's side when it leaves)."""

    request: GenerationRequest
    prompt_len: int
    tokens: list[int]
    max_new_tokens: int
    loop: asyncio.AbstractEventLoop
    mailbox: asyncio.Queue[Any]
    outbox: Outbox | None = None  # where the engine collects a step's events; None: post each at once
    cancelled: bool = False
    cached: int = 0  # tokens[:cached] are in the KV cache
    # tokens[:exact] were computed as prompt chunks, so a later request that shares them gets the very numbers its
    # own computation would give (a token generated one step at a time is computed slightly differently)
    exact: int = 0
    reused: int = 0  # prompt tokens that came from the prefix cache or another sequence's row
    warm: bool = False  # no caller: it computes a finished sequence's answer again as prompt, for the cache
    row: int = -1  # the cache row it owns while admitted
    generated: int = 0
    chooser: TokenChooser | None = None
    detok: IncrementalDetokenizer | None = None
    stopper: StopMatcher | None = None
    # Constrained decoding: ``grammar`` masks every next token while set. With tools, ``call_text`` (not None once
    # the model is in a call) collects the calls' text instead of the answer's; ``opener`` watches an "auto"
    # answer for the model opening a call, which starts ``call_grammar``.
    grammar: Constraint | None = None
    call_grammar: Constraint | None = None
    call_text: str | None = None
    opener: StopMatcher | None = None
    prompt_logprobs: list[float | None] = field(default_factory=list)
    prompt_tops: list[tuple[tuple[int, float], ...]] = field(default_factory=list)
    order: int = field(default_factory=lambda: next(_order))
    arrival: float = field(default_factory=time.monotonic)  # when it joined the queue (monotonic)
    admitted: bool = False  # once it had a row (a preempted sequence waits again, not counted as queue time)

    @property
    def started(self) -> bool:
        return self.chooser is not None

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.cached

    @property
    def wants_prompt_logprobs(self) -> bool:
        return self.request.prefill_details and not self.started

    def post(self, item: object) -> None:
        if self.outbox is not None:
            self.outbox.add(self, item)
            return
        try:
            self.loop.call_soon_threadsafe(self.mailbox.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening any more
            self.cancelled = True

    def record_prompt_logprobs(self, start: int, logits: torch.Tensor) -> None:
        """Logprob of each prompt token given those before it (and, with ``top_n_tokens``, the most likely
        tokens there), from the logits of a chunk of prompt positions ``start ..`` ([n, vocab]): the logits at
        position p are the distribution of token p + 1."""
        if start == 0:
            self.prompt_logprobs.append(None)  # the first token has no context
            self.prompt_tops.append(())
        predicting = min(start + logits.shape[0], self.prompt_len - 1) - start  # rows whose next token is prompt
        if predicting <= 0:
            return
        logp = torch.log_softmax(logits[:predicting].to(torch.float32), dim=-1)
        following = torch.tensor(self.tokens[start + 1 : start + 1 + predicting], dtype=torch.long)
        self.prompt_logprobs += logp.gather(1, following.unsqueeze(1)).squeeze(1).tolist()
        top_n = self.request.top_n_tokens
        if top_n:
            values, indices = torch.topk(logp, top_n, dim=-1)
            for ids, lps in zip(indices.tolist(), values.tolist(), strict=True):
                self.prompt_tops.append(tuple(zip(ids, lps, strict=True)))
        else:
            self.prompt_tops += [()] * predicting

    def forget_prompt_logprobs(self) -> None:
        """The KV cache was lost: the prompt runs again, and its logprobs are recorded again."""
        self.prompt_logprobs.clear()
        self.prompt_tops.clear()

    def begin(self, vocab: Vocabulary) -> None:
        """The whole prompt is cached: set up sampling and tell the caller about the prompt."""
        req = self.request
        prompt = self.tokens[: self.prompt_len]
        self.chooser = TokenChooser(req.sampling, prompt, vocab.size, req.top_n_tokens)
        self.detok = IncrementalDetokenizer(vocab.tokenizer, prompt)
        self.stopper = StopMatcher(req.stopping.stop, req.stopping.include_stop_in_output)
        reused = min(self.reused, self.prompt_len)
        if not req.prefill_details:
            self.post(PromptInfo(self.prompt_len, self.chooser.seed, cached_tokens=reused))
            return
        details = tuple(vocab.token(i, lp) for i, lp in zip(prompt, self.prompt_logprobs, strict=True))
        tops = tuple(tuple(vocab.token(i, lp) for i, lp in step) for step in self.prompt_tops)
        pieces = _pieces(vocab.tokenizer, prompt)
        self.post(PromptInfo(self.prompt_len, self.chooser.seed, details, pieces, tops, cached_tokens=reused))

    def advance(self, logits: torch.Tensor, vocab: Vocabulary) -> bool:
        """Choose the next token from ``logits`` and send it; True when the sequence is finished."""
        assert self.chooser is not None and self.detok is not None and self.stopper is not None
        try:
            choice = self.chooser.choose(logits, self.grammar.allowed() if self.grammar is not None else None)
            if self.grammar is not None:
                self.grammar.take(choice.token_id)
        except RuntimeError as exc:  # the grammar and the vocabulary disagree: this sequence ends, not the step
            self.post(GenerationError(f"constrained decoding failed: {exc}"))
            return True
        self.generated += 1
        self.tokens.append(choice.token_id)
        special = choice.token_id in vocab.special_ids
        finish: str | None = None
        text = ""
        if not special:
            text, stopped = self.stopper.push(self.detok.push(choice.token_id))
            if stopped:
                finish = "stop_sequence"
        if finish is None and choice.token_id in vocab.eos_ids and not self.request.stopping.ignore_eos:
            finish = "eos_token"
        if finish is None and self.grammar is not None and self.grammar.done:
            finish = "eos_token"  # the grammar admits nothing more
        if finish is None and self.generated >= self.max_new_tokens:
            finish = "length"
        if finish is not None and finish != "stop_sequence":
            text += self.stopper.push(self.detok.flush())[0] + self.stopper.flush()
        text = self._watch_calls(text, vocab, finish is not None)
        calls: tuple[ToolCall, ...] = ()
        if finish is not None and self.call_text is not None:
            parsed, whole = tools.parse_calls(self.call_text)
            if not parsed:  # a call that is not one is an error, never text passed on as the answer
                self.post(GenerationError(_cut_call(finish, self.max_new_tokens)))
                return True
            # Calls cut short by max_tokens after whole ones: the whole ones, and "length" says the rest was cut.
            calls, finish = tuple(parsed), "tool_calls" if whole else finish
        # A token's text is what it adds to the output (TGI's decode_token), or its literal form if special.
        if special:
            token = vocab.token(choice.token_id, choice.logprob)
        else:
            token = Token(choice.token_id, text, choice.logprob, False)
        top = tuple(vocab.token(i, lp) for i, lp in choice.top)
        self.post(StepEvent(self.generated, token, text, top, finish, tool_calls=calls))
        return finish is not None

    def _watch_calls(self, text: str, vocab: Vocabulary, last: bool) -> str:
        """The answer's share of ``text``: a call's text is kept apart; text that may open a call waits."""
        if self.call_text is not None:
            self.call_text += text
            return ""
        if self.opener is None:
            return text
        text, opened = self.opener.push(text)
        if opened:
            self.call_text = tools.OPEN + self.opener.after
            self.grammar, self.call_grammar = self.call_grammar, None
            if self.grammar is not None:  # what the model wrote of the call so far goes through the grammar too
                ids = vocab.tokenizer(self.call_text, add_special_tokens=False).input_ids
                try:
                    self.grammar.feed(list(ids))
                except RuntimeError:
                    self.grammar = None  # the call is still parsed, and refused at the end if malformed
        elif last:
            text += self.opener.flush()
        return text


def _cut_call(finish: str, max_new_tokens: int) -> str:
    if finish == "length":
        return (
            f"the model's tool call was cut off at max_tokens ({max_new_tokens}) before it was complete; "
            "send a larger max_tokens"
        )
    return "the model's tool call was cut off by a stop sequence before it was complete; leave `stop` out"
