"""Incremental detokenization that never splits a multi-byte character or a word piece.

TGI's two-offset method (``Model.decode_token``): decode a window of recent ids twice, with and without the
newest tokens, and emit the difference only when it grew and does not end in U+FFFD (an incomplete UTF-8
sequence). A few prompt tokens prime the window so that a leading space is decoded the way the model meant it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IncrementalDetokenizer"]

_PRIME = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_ids: list[int]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(prompt_ids[-_PRIME:])
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, token_id: int) -> str:
        """Add one (non-special) token; return the text it completes, possibly ''."""
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """At the end of a sequence: whatever is left, replacement characters included."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        decode = self._tokenizer.decode
        prefix_text = decode(self._ids[self._prefix : self._read], skip_special_tokens=False)
        new_text = decode(self._ids[self._prefix :], skip_special_tokens=False)
        if len(new_text) > len(prefix_text) and (final or not new_text.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text) :]
        return ""
