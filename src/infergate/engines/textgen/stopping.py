"""Stop sequences over streamed text, with a hold-back buffer.

Text that might be the start of a stop sequence is held back until the next token says whether it is one,
so a stream never shows part of a stop sequence that the final text leaves out (OpenAI) and never misses
one split across tokens.
"""

from __future__ import annotations

__all__ = ["StopMatcher"]


class StopMatcher:
    def __init__(self, stops: tuple[str, ...], include_stop: bool) -> None:
        self._stops = tuple(s for s in stops if s)
        self._include = include_stop
        self._pending = ""
        self.after = ""  # the text that followed the stop sequence in what was pushed (a tool call's start)

    def push(self, text: str) -> tuple[str, bool]:
        """Add new text; return (text safe to emit now, whether a stop sequence ended the sequence)."""
        if not self._stops:
            return text, False
        self._pending += text
        hit = min(
            ((i, stop) for stop in self._stops if (i := self._pending.find(stop)) >= 0),
            default=None,
        )
        if hit is not None:
            index, stop = hit
            out = self._pending[: index + (len(stop) if self._include else 0)]
            self.after = self._pending[index + len(stop) :]
            self._pending = ""
            return out, True
        hold = self._partial_suffix()
        out, self._pending = self._pending[: len(self._pending) - hold], self._pending[len(self._pending) - hold :]
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest end of the pending text that begins some stop sequence."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:n]):
                    best = n
                    break
        return best
