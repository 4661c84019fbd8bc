"""The prefix cache: KV caches of sequences that left, kept by their tokens, so that a request whose tokens start
the same way (the same system prompt, the next turn of a conversation) computes only the rest.

An entry is one sequence's first positions as the runner saved them (llama.cpp keeps a sequence's cache in a
stream of its own, so what it can save and load is a whole sequence's cells: the entry, not a block, is the unit,
as in llama.cpp's own server). Entries are found through block hashes (vLLM's scheme): each whole block of
``BLOCK`` tokens is hashed together with the hash of the blocks before it, and every block hash of an entry points
to it, so a lookup walks the request's blocks to the last one some entry shares, then extends the match token by
token within that entry. An entry whose tokens another entry continues (the previous turn of a conversation) is
dropped when the longer one arrives: the longer one serves every lookup the shorter one did. The entries hold at
most ``budget_bytes`` together; the least recently used go first.

Pure bookkeeping: the engine saves and loads the payloads through its runner.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from infergate.core.engine import PrefixCacheStats

__all__ = ["BLOCK", "Entry", "PrefixCache", "common_prefix"]

BLOCK = 16  # tokens per hashed block; a shorter shared prefix is not worth a lookup


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share (slices compare in C; a binary search keeps it O(n log n))."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo + 1 < hi:  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def block_hashes(tokens: Sequence[int], salt: str | None = None) -> list[int]:
    """The chained hash of each whole block of ``tokens``, the chain started from the request's cache salt."""
    hashes: list[int] = []
    previous = hash(salt)
    for start in range(0, len(tokens) - BLOCK + 1, BLOCK):
        previous = hash((previous, *tokens[start : start + BLOCK]))
        hashes.append(previous)
    return hashes


@dataclass(eq=False)
class Entry:
    tokens: list[int]
    saved: Any  # the runner's copy of positions 0 .. len(tokens)-1
    nbytes: int
    salt: str | None = None  # only requests with the same cache salt use it
    hashes: list[int] = field(default_factory=list)


class PrefixCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # id(entry) -> entry, least recently used first
        self._by_block: dict[int, list[Entry]] = {}
        self.stats = PrefixCacheStats()

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def find(self, tokens: list[int], salt: str | None = None) -> tuple[Entry | None, int]:
        """The entry of ``salt`` sharing the longest prefix with ``tokens``, and its length.

        Does not count as a lookup: the engine reports what it used (:meth:`record`)."""
        last: list[Entry] | None = None
        for h in block_hashes(tokens, salt):
            found = self._by_block.get(h)
            if not found:
                break
            last = found
        if not last:
            return None, 0
        best, length = None, 0
        for entry in last:
            if entry.salt != salt:
                continue  # a hash collision between salts: never served across them
            n = common_prefix(entry.tokens, tokens)
            if n > length:
                best, length = entry, n
        return best, length

    def touch(self, entry: Entry) -> None:
        if id(entry) in self._entries:
            self._entries.move_to_end(id(entry))

    def forget(self, entry: Entry) -> None:
        """Drop an entry the runner can no longer load."""
        self._drop(entry)

    def record(self, queried: int, reused: int) -> None:
        self.stats.lookups += 1
        self.stats.queried_tokens += queried
        if reused:
            self.stats.hits += 1
            self.stats.hit_tokens += reused

    def wants(self, tokens: list[int], nbytes: int, salt: str | None = None) -> bool:
        """Whether ``tokens`` would be a new entry (long enough, within the budget, not inside a kept one)."""
        if len(tokens) < BLOCK or nbytes > self.budget_bytes:
            return False
        entry, length = self.find(tokens, salt)
        if entry is not None and length == len(tokens):
            self.touch(entry)  # already kept, as part of a longer sequence
            return False
        return True

    def insert(self, tokens: list[int], saved: Any, nbytes: int, salt: str | None = None) -> None:
        hashes = block_hashes(tokens, salt)
        for h in hashes:  # entries this one continues are served by it from now on
            for old in list(self._by_block.get(h, ())):
                if (
                    old.salt == salt
                    and len(old.tokens) <= len(tokens)
                    and common_prefix(old.tokens, tokens) == len(old.tokens)
                ):
                    self._drop(old)
        while self._entries and self.stats.bytes + nbytes > self.budget_bytes:
            self._drop(next(iter(self._entries.values())))
            self.stats.evictions += 1
        entry = Entry(tokens, saved, nbytes, salt, hashes)
        self._entries[id(entry)] = entry
        for h in hashes:
            self._by_block.setdefault(h, []).append(entry)
        self.stats.entries += 1
        self.stats.bytes += nbytes

    def clear(self) -> None:
        """Drop every entry (the model was unloaded or reloaded: its saved caches mean nothing any more)."""
        for entry in list(self._entries.values()):
            self._drop(entry)

    def _drop(self, entry: Entry) -> None:
        if self._entries.pop(id(entry), None) is None:
            return
        for h in entry.hashes:
            kept = self._by_block.get(h)
            if kept is not None:
                kept.remove(entry)
                if not kept:
                    del self._by_block[h]
        entry.saved = None
        self.stats.entries -= 1
        self.stats.bytes -= entry.nbytes
