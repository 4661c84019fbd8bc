"""The last error responses this process sent, for the admin page: what went wrong, lately, for whom."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

__all__ = ["RecentError", "RecentErrors"]


@dataclass(frozen=True, slots=True)
class RecentError:
    at: float  # time.time()
    status: int
    method: str
    path: str
    model: str | None
    user: str | None  # the user's name; None for anonymous callers and requests refused before authentication
    message: str


class RecentErrors:
    """A bounded ring, newest first; the messages are the ones the caller saw (they never hold a token)."""

    def __init__(self, keep: int = 100) -> None:
        self._items: deque[RecentError] = deque(maxlen=keep)

    def record(self, status: int, method: str, path: str, model: str | None, user: str | None, message: str) -> None:
        self._items.appendleft(RecentError(time.time(), status, method, path, model, user, message[:500]))

    def latest(self) -> list[RecentError]:
        return list(self._items)
