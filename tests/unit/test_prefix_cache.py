"""The prefix cache's bookkeeping: longest-prefix lookup through block hashes, entries a longer one continues
dropped, least recently used evicted within the byte budget. (What the cached KV does to answers is in
tests/e2e/test_prefix_cache.py, on the real runners.)"""

from __future__ import annotations

from infergate.engines.textgen.prefix import BLOCK, PrefixCache, common_prefix


def tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def find(cache: PrefixCache, wanted: list[int]) -> tuple[object, int]:
    return cache.find(wanted)


def test_common_prefix_counts_shared_leading_tokens() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix([1, 2, 3], [1, 2]) == 2
    assert common_prefix([1, 2, 3], [9]) == 0
    long = tokens(1000)
    assert common_prefix(long, [*long[:777], -1, *long[778:]]) == 777


def test_the_longest_shared_prefix_is_found_to_the_token() -> None:
    cache = PrefixCache(10_000)
    a = tokens(40)
    b = [*tokens(20), *tokens(30, start=500)]
    cache.insert(a, "a", 40)
    cache.insert(b, "b", 50)
    entry, length = find(cache, [*tokens(37), 999, 999])
    assert entry is not None and entry.saved == "a" and length == 37
    entry, length = find(cache, [*tokens(20), *tokens(20, start=500)])
    assert entry is not None and entry.saved == "b" and length == 40
    assert find(cache, tokens(BLOCK - 1)) == (None, 0)  # shorter than a block: not looked up
    assert find(cache, tokens(40, start=7)) == (None, 0)


def test_an_entry_a_longer_one_continues_is_dropped_and_a_contained_one_is_not_added() -> None:
    cache = PrefixCache(10_000)
    cache.insert(tokens(32), "turn 1", 32)
    cache.insert(tokens(64), "turn 2", 64)  # the next turn of the same conversation
    assert cache.stats.entries == 1 and cache.stats.bytes == 64 and cache.stats.evictions == 0
    assert find(cache, tokens(32))[0].saved == "turn 2"  # type: ignore[union-attr]
    assert not cache.wants(tokens(48), 48)  # already inside the kept entry
    assert cache.wants(tokens(80), 80)


def test_the_least_recently_used_entries_go_first_and_the_budget_holds() -> None:
    cache = PrefixCache(100)
    cache.insert(tokens(32, start=0), "a", 40)
    cache.insert(tokens(32, start=100), "b", 40)
    cache.touch(find(cache, tokens(32, start=0))[0])  # type: ignore[arg-type]
    cache.insert(tokens(32, start=200), "c", 40)  # room for two: "b" was used least recently
    assert find(cache, tokens(32, start=100)) == (None, 0)
    assert find(cache, tokens(32, start=0))[1] == 32
    assert cache.stats.evictions == 1 and cache.stats.bytes == 80 <= cache.budget_bytes
    assert not cache.wants(tokens(200, start=1000), 101)  # larger than the whole budget


def test_clear_drops_everything_and_the_counts_follow() -> None:
    cache = PrefixCache(1000)
    cache.insert(tokens(32), "a", 10)
    cache.record(queried=40, reused=32)
    cache.record(queried=40, reused=0)
    cache.clear()
    assert cache.stats.entries == 0 and cache.stats.bytes == 0
    assert (cache.stats.lookups, cache.stats.hits, cache.stats.queried_tokens, cache.stats.hit_tokens) == (2, 1, 80, 32)
    assert find(cache, tokens(32)) == (None, 0)


def test_a_salted_entry_is_found_only_with_its_salt() -> None:
    cache = PrefixCache(10_000)
    cache.insert(tokens(32), "a", 32, salt="tenant-a")
    assert cache.find(tokens(32), "tenant-a")[1] == 32
    assert cache.find(tokens(32), "tenant-b") == (None, 0)
    assert find(cache, tokens(32)) == (None, 0)
    assert cache.wants(tokens(32), 32)  # unsalted, it is new
    cache.insert(tokens(32), "plain", 32)
    assert cache.stats.entries == 2  # the same tokens under another salt do not replace it
