"""Constrained decoding: a sequence's grammar turned, at every step, into the tokens it may take next.

llguidance does the work (the library behind Guidance, and vLLM's and SGLang's "guidance" backend): 7.6 MB with
no dependencies, where xgrammar brings triton and TVM (about 1 GB) onto a CPU machine. It compiles JSON
schemas, regular expressions and Lark grammars against the model's vocabulary; a 20-field schema takes about
2 ms and a mask about 0.03 ms (bench/structured.py). A grammar is compiled once and kept; each sequence gets a
copy of the compiled matcher and advances it with the tokens it takes.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import llguidance
import numpy as np
import torch
from llguidance.gbnf_to_lark import gbnf_to_lark
from llguidance.hf import from_tokenizer

from infergate.core.errors import ValidationError
from infergate.core.requests import Grammar

__all__ = ["JSON_OPTIONS", "Constraint", "GrammarCompiler"]

_KEPT = 128  # compiled grammars kept per model: the schemas a service's callers send are few and repeat
# Compact JSON with OpenAI's spacing: flexible whitespace lets a small model fill its answer with newlines.
# (A JSON schema inside a Lark grammar takes them as its "x-guidance" member.)
JSON_OPTIONS: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class GrammarCompiler:
    """Compiles grammars for one loaded model. Thread-safe: requests compile off the step loop, in threads."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Iterable[int], max_bytes: int) -> None:
        self._hf = tokenizer
        self._vocab_size = vocab_size
        self._eos = sorted(eos_ids)
        self.max_bytes = max_bytes
        self._tokenizer: llguidance.LLTokenizer | None = None  # built on first use: 0.3 s for a 49k vocabulary
        self._kept: OrderedDict[tuple[str, str], llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[tuple[str, str], threading.Lock] = {}  # a lock per grammar being compiled
        self.compiled = 0  # grammars compiled (not found kept), for tests and benchmarks

    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = from_tokenizer(self._hf, n_vocab=self._vocab_size, eos_token=self._eos)
            return self._tokenizer

    def compile(self, grammar: Grammar) -> Constraint:
        """A fresh constraint for one sequence; ValidationError (a 422) naming what is wrong with the grammar."""
        size = len(grammar.value.encode())
        if size > self.max_bytes:
            raise ValidationError(
                f"the {grammar.kind} grammar is {size} bytes, more than this server's limit of {self.max_bytes} bytes "
                f"([engine] max_grammar_kb = {self.max_bytes // 1024}); send a smaller schema",
                param=grammar.source,
            )
        key = (grammar.kind, grammar.value)
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        try:
            with building:  # the same schema sent by several requests at once is compiled once; others wait for it
                with self._lock:
                    kept = self._kept.get(key)
                    if kept is not None:
                        self._kept.move_to_end(key)
                if kept is None:
                    kept = self._build(grammar)
                    with self._lock:
                        self._kept[key] = kept
                        self.compiled += 1
                        while len(self._kept) > _KEPT:
                            self._kept.popitem(last=False)
        finally:
            with self._lock:
                self._building.pop(key, None)
        return Constraint(kept.deep_copy(), self._vocab_size)

    def _build(self, grammar: Grammar) -> llguidance.LLMatcher:
        try:
            if grammar.kind == "json":
                text = llguidance.LLMatcher.grammar_from_json_schema(json.loads(grammar.value), JSON_OPTIONS)
            elif grammar.kind == "regex":
                text = llguidance.LLMatcher.grammar_from_regex(grammar.value)
            elif grammar.kind == "gbnf":  # llama.cpp's grammars, which vLLM's `guided_grammar` takes too
                text = llguidance.LLMatcher.grammar_from_lark(gbnf_to_lark(grammar.value))
            else:
                text = llguidance.LLMatcher.grammar_from_lark(grammar.value)
        except Exception as exc:  # the converters raise ValueError, or worse on GBNF they cannot read
            raise ValidationError(f"the {grammar.kind} grammar is not valid: {exc}", param=grammar.source) from exc
        matcher = llguidance.LLMatcher(self.tokenizer(), text, log_level=0)
        if matcher.is_error():
            raise ValidationError(
                f"the {grammar.kind} grammar cannot be compiled: {_first_line(matcher.get_error())}; fix it, "
                "or leave out what the message names",
                param=grammar.source,
            )
        return matcher


def _first_line(error: str) -> str:
    """llguidance's message on one line, short enough for an error body."""
    return " ".join(error.split())[:300] or "unknown error"


class Constraint:
    """One sequence's matcher. ``allowed()`` is its next step's token mask; ``take`` advances it."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self.matcher = matcher
        self._vocab_size = vocab_size
        self._bits = np.zeros((vocab_size + 31) // 32, dtype=np.int32)

    def allowed(self) -> torch.Tensor:
        """A bool tensor over the vocabulary: the tokens the grammar admits next."""
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self._vocab_size]
        return torch.from_numpy(bits.astype(bool))

    def take(self, token_id: int) -> None:
        if not self.matcher.consume_token(token_id):
            raise RuntimeError(f"the grammar refused token {token_id}: {_first_line(self.matcher.get_error())}")

    def feed(self, tokens: list[int]) -> None:
        """Tokens already generated before the constraint began (a tool call's opening tag)."""
        if not self.matcher.consume_tokens(tokens):
            raise RuntimeError(f"the grammar refused the call's start: {_first_line(self.matcher.get_error())}")

    @property
    def done(self) -> bool:
        """Nothing more may follow (the grammar ended, or its end token was taken)."""
        return bool(self.matcher.is_stopped())
