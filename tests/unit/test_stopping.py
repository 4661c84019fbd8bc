"""StopMatcher: stop sequences found across pushes, with held-back text never shown early."""

from __future__ import annotations

import pytest

from infergate.engines.textgen.stopping import StopMatcher


def run(stops: tuple[str, ...], pieces: list[str], include_stop: bool) -> tuple[list[str], bool, str]:
    """Push every piece until a stop hits; return what each push emitted, whether it stopped, and the flush."""
    matcher = StopMatcher(stops, include_stop)
    emitted: list[str] = []
    for piece in pieces:
        out, stopped = matcher.push(piece)
        emitted.append(out)
        if stopped:
            return emitted, True, ""
    return emitted, False, matcher.flush()


@pytest.mark.parametrize(("include", "expected"), [(True, "Hello </s>"), (False, "Hello ")])
def test_stop_split_across_pushes(include: bool, expected: str) -> None:
    emitted, stopped, _ = run(("</s>",), ["Hello <", "/", "s", "> ignored"], include)
    assert stopped
    assert emitted[0] == "Hello "  # "<" may begin the stop, so it waits
    assert emitted[1] == emitted[2] == ""
    assert "".join(emitted) == expected


def test_held_text_is_released_when_it_is_not_a_stop() -> None:
    matcher = StopMatcher(("</s>",), include_stop=False)
    assert matcher.push("a </") == ("a ", False)
    assert matcher.push("b>") == ("</b>", False)


def test_overlapping_prefix_is_partly_released() -> None:
    # "aa" may begin "aab"; after "aaa" only the last two can still be its start.
    matcher = StopMatcher(("aab",), include_stop=False)
    assert matcher.push("aa") == ("", False)
    assert matcher.push("a") == ("a", False)
    assert matcher.push("b") == ("", True)


@pytest.mark.parametrize(("include", "expected"), [(True, "xSTOP"), (False, "x")])
def test_text_after_the_stop_is_cut(include: bool, expected: str) -> None:
    assert StopMatcher(("STOP",), include).push("xSTOPyyy STOP z") == (expected, True)


@pytest.mark.parametrize(("include", "expected"), [(True, "xxbb"), (False, "xx")])
def test_earliest_of_several_stops_wins(include: bool, expected: str) -> None:
    assert StopMatcher(("a", "bb"), include).push("xxbbya") == (expected, True)


def test_earliest_stop_across_pushes() -> None:
    matcher = StopMatcher(("END", "\n\n"), include_stop=True)
    assert matcher.push("one\n") == ("one", False)
    assert matcher.push("\nEND") == ("\n\n", True)


def test_flush_returns_what_is_held() -> None:
    matcher = StopMatcher(("</s>", "###"), include_stop=True)
    assert matcher.push("abc</s") == ("abc", False)
    assert matcher.flush() == "</s"
    assert matcher.flush() == ""


def test_a_complete_stop_beats_a_longer_partial_one() -> None:
    matcher = StopMatcher(("ab", "xabc"), include_stop=False)
    assert matcher.push("zxab") == ("zx", True)  # "ab" is complete before "xabc" could be


def test_no_stops_pass_through() -> None:
    for stops in [(), ("",)]:
        matcher = StopMatcher(stops, include_stop=False)
        assert matcher.push("Hello <") == ("Hello <", False)
        assert matcher.push("/s>") == ("/s>", False)
        assert matcher.flush() == ""


def test_whole_text_reassembles_without_a_stop() -> None:
    pieces = ["The ", "en", "d is", " not E", "N", "D", "ing"]
    emitted, stopped, rest = run(("END.",), pieces, include_stop=False)
    assert not stopped
    assert "".join(emitted) + rest == "".join(pieces)
