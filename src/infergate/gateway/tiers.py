"""Tier policy: what each tier may do, and the limits that enforce it, counted in the shared Counters."""

from __future__ import annotations

import math
from dataclasses import dataclass

from infergate.core.errors import Quota, RateLimitedError
from infergate.gateway.counters import Counters
from infergate.gateway.principal import Principal
from infergate.observability.instruments import Metrics

__all__ = ["Limiter", "Reservation", "TierPolicy"]

_TOKEN_WINDOW_S = 60.0
# A crashed holder's concurrency slot expires after this long (a safety net, not the normal release).
_SLOT_TTL_S = 600.0


@dataclass(frozen=True, slots=True)
class TierPolicy:
    name: str
    requests: int
    window: float
    tokens_per_minute: int
    concurrent: int
    max_new_tokens: int
    priority: int
    max_image_size: int = 1536
    max_inference_steps: int = 100


@dataclass(frozen=True, slots=True)
class Reservation:
    key: str
    amount: int
    window: int


def _upgrade_hint(principal: Principal) -> str:
    if principal.anonymous:
        return "or send an API token (an admin creates users with `infergate users create NAME --tier free`)"
    return f"or ask an admin for a higher tier (`infergate users set-tier {principal.user_name} pro`)"


class Limiter:
    """``metrics``: where refusals are counted, by tier and limit (None: nowhere)."""

    def __init__(self, counters: Counters, namespace: str = "infergate", metrics: Metrics | None = None) -> None:
        self._counters = counters
        self._ns = namespace
        self._metrics = metrics

    def _refuse(self, tier: TierPolicy, message: str, quota: Quota) -> RateLimitedError:
        if self._metrics is not None:
            self._metrics.refused(tier.name, quota.policy)
        return RateLimitedError(message, quota)

    async def count_request(self, principal: Principal, tier: TierPolicy) -> Quota:
        """Count one request against the tier's window; RateLimitedError when none are left."""
        d = await self._counters.hit(f"{self._ns}:req:{principal.key}", 1, tier.requests, tier.window)
        quota = Quota("api", tier.requests, d.remaining, d.reset_s, tier.window)
        if not d.allowed:
            raise self._refuse(
                tier,
                f"Rate limit reached: the {tier.name} tier allows {tier.requests} requests per "
                f"{tier.window:g} s. Retry after {math.ceil(d.reset_s)} s, {_upgrade_hint(principal)}.",
                quota,
            )
        return quota

    async def standing(self, principal: Principal, tier: TierPolicy) -> list[Quota]:
        """What is left of the caller's request and token windows now, read from the counters requests use
        (a cost of 0 reads without counting)."""
        requests = await self._counters.hit(f"{self._ns}:req:{principal.key}", 0, tier.requests, tier.window)
        tokens = await self._counters.hit(f"{self._ns}:tok:{principal.key}", 0, tier.tokens_per_minute, _TOKEN_WINDOW_S)
        return [
            Quota("api", tier.requests, requests.remaining, requests.reset_s, tier.window),
            Quota("tokens", tier.tokens_per_minute, tokens.remaining, tokens.reset_s, _TOKEN_WINDOW_S),
        ]

    async def reserve_tokens(self, principal: Principal, tier: TierPolicy, amount: int) -> Reservation:
        """Reserve ``amount`` generated tokens (the requests' max_new_tokens) before generating."""
        key = f"{self._ns}:tok:{principal.key}"
        d = await self._counters.hit(key, amount, tier.tokens_per_minute, _TOKEN_WINDOW_S)
        if not d.allowed:
            raise self._refuse(
                tier,
                f"Token limit reached: the {tier.name} tier allows {tier.tokens_per_minute} generated tokens "
                f"per minute; this request reserves {amount} (its max_new_tokens) and {d.remaining} are left. "
                f"Retry after {math.ceil(d.reset_s)} s, ask for fewer tokens, {_upgrade_hint(principal)}.",
                Quota("tokens", tier.tokens_per_minute, d.remaining, d.reset_s, _TOKEN_WINDOW_S),
            )
        return Reservation(key, amount, d.window)

    async def settle(self, reservation: Reservation, used: int) -> None:
        """Give back what was reserved but not generated."""
        unused = reservation.amount - used
        if unused > 0:
            await self._counters.refund(reservation.key, unused, _TOKEN_WINDOW_S, reservation.window)

    async def acquire_slot(self, principal: Principal, tier: TierPolicy) -> str:
        key = f"{self._ns}:conc:{principal.key}"
        if not await self._counters.acquire(key, tier.concurrent, _SLOT_TTL_S):
            raise self._refuse(
                tier,
                f"Too many requests in flight: the {tier.name} tier allows {tier.concurrent} at once. "
                f"Wait for one to finish, {_upgrade_hint(principal)}.",
                Quota("concurrency", tier.concurrent, 0, 1.0, 1.0),
            )
        return key

    async def release_slot(self, key: str) -> None:
        await self._counters.release(key)
