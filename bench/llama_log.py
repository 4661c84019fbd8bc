"""What llama-cpp-python's OpenAI server says in its log about the prompt tokens it reused, for the benchmarks
that put it beside infergate (bench/remote.py, bench/prefix.py)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["prefix_hits"]


def prefix_hits(log_path: Path, since: int) -> list[int]:
    """Prompt tokens the server reused from its context, per request logged after byte ``since`` of its log."""
    with log_path.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [int(m.group(1)) for m in re.finditer(r"Llama\.generate: (\d+) prefix-match hit", text)]
