"""Which replica of a remote model takes the next request, and which ones are out.

Choice (``ReplicaSet.choose``): among the replicas not ejected and not cooling down, the one with fewer requests
in flight of two drawn at random (power of two choices: near least-loaded, without every gateway herding onto
the same "least" replica). In-flight counts are this gateway's own plus, with a shared board, every other
gateway's as of the last sync. With prefix affinity, a prompt's prefix picks a replica by rendezvous hashing
(the same one on every gateway, for that replica's prefix cache) unless it has ``affinity_slack`` more requests in
flight than the least loaded one: affinity lets go under load (prefix-only routing fell to ~55% success in
llm-d's tests; prefix plus load held 100%).

Failures: a connection error or a 5xx ejects a replica for ``eject_s`` (the health probe brings it back as soon
as it answers); a 429/503 only cools it for its Retry-After. Ejections go on the shared board, so every gateway
stops sending there within one sync (``SYNC_S``).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

from infergate.core.engine import ReplicaStatus

__all__ = ["SYNC_S", "Replica", "ReplicaSet"]

SYNC_S = 0.25  # how often a gateway publishes its in-flight counts and reads the board


@dataclass
class Replica:
    url: str
    in_flight: int = 0  # this gateway's requests on it now
    others_in_flight: int = 0  # other gateways' requests, from the board
    ejected_until: float = 0.0  # monotonic; set by a failure here or on the board
    cooling_until: float = 0.0  # after a 429/503: no requests until then, but not a failure
    last_error: str | None = None
    healthy_probe: bool = True
    probe_timeouts: int = 0  # in a row
    # Counters for /metrics.
    requests: int = 0
    errors: int = 0
    retries: int = 0
    ejections: int = 0
    latency_sum_s: float = 0.0  # time to the first byte of successful attempts, for the latency summary
    latency_count: int = 0

    def load(self) -> int:
        return self.in_flight + self.others_in_flight

    def available(self, now: float) -> bool:
        return now >= self.ejected_until and now >= self.cooling_until

    def state(self, now: float) -> str:
        if now < self.ejected_until:
            return "ejected"
        if now < self.cooling_until:
            return "cooling"
        return "up"


class ReplicaSet:
    def __init__(self, urls: Iterable[str], *, eject_s: float, affinity_chars: int = 0, affinity_slack: int = 4):
        self.replicas = [Replica(url.rstrip("/")) for url in urls]
        self._eject_s = eject_s
        self._affinity_chars = affinity_chars
        self._affinity_slack = affinity_slack
        self._random = random.Random()

    def choose(self, prompt: str, exclude: set[str]) -> Replica | None:
        """The replica for the next attempt, or None when none is available (every one ejected, cooling or
        already tried)."""
        now = time.monotonic()
        ready = [r for r in self.replicas if r.url not in exclude and r.available(now)]
        if not ready:
            return None
        if self._affinity_chars and len(prompt) >= self._affinity_chars:
            preferred = _rendezvous(prompt[: self._affinity_chars], ready)
            if preferred.load() <= min(r.load() for r in ready) + self._affinity_slack:
                return preferred
        if len(ready) == 1:
            return ready[0]
        a, b = self._random.sample(ready, 2)
        return a if a.load() <= b.load() else b

    def eject(self, replica: Replica, reason: str) -> None:
        replica.last_error = reason
        replica.errors += 1
        if time.monotonic() >= replica.ejected_until:
            replica.ejections += 1
        replica.ejected_until = time.monotonic() + self._eject_s

    def cool(self, replica: Replica, reason: str, seconds: float) -> None:
        """A replica that said it is busy (429/503): skip it for ``seconds``, without counting a failure."""
        replica.last_error = reason
        replica.cooling_until = time.monotonic() + seconds

    def restore(self, replica: Replica) -> None:
        """A probe answered: the replica takes requests again at once."""
        replica.ejected_until = 0.0
        replica.healthy_probe = True

    def soonest_s(self) -> float:
        """Seconds until some replica is expected back (for the 503's Retry-After)."""
        now = time.monotonic()
        waits = [max(r.ejected_until, r.cooling_until) - now for r in self.replicas]
        return max(1.0, min(waits)) if waits else 1.0

    def views(self) -> list[ReplicaStatus]:
        now = time.monotonic()
        return [
            ReplicaStatus(
                r.url,
                r.state(now),
                r.load(),
                r.last_error,
                r.requests,
                r.errors,
                r.retries,
                r.ejections,
                r.latency_sum_s,
                r.latency_count,
            )
            for r in self.replicas
        ]

    def by_url(self, url: str) -> Replica | None:
        return next((r for r in self.replicas if r.url == url), None)


def _rendezvous(key: str, replicas: list[Replica]) -> Replica:
    """Highest-random-weight hashing: every gateway maps a prefix to the same replica, and removing a replica
    moves only its own prefixes."""

    def weight(replica: Replica) -> bytes:
        return hashlib.blake2b(f"{replica.url}\0{key}".encode(), digest_size=8).digest()

    return max(replicas, key=weight)
