"""Pure ASGI middleware: RateLimit headers on every admitted response, one usage record and one count in the
request metrics per request.

A handler that admits a request puts its gateway Ticket in ``request.state.ticket``. This middleware adds
the ticket's quota headers when the response starts (error responses included), and when the response has
ended (a stream too, or a client that went away) it hands the ticket and the status to the gateway, and counts
the request by route template (the router's, never the raw path: ids and typos would make a label without
bound), model, status and tier.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infergate.core.errors import Quota
from infergate.gateway.gateway import Ticket
from infergate.observability.instruments import NONE, Metrics

__all__ = ["Accounting", "quota_headers", "route_template"]


def quota_headers(quota: Quota) -> dict[str, str]:
    """The IETF draft headers, in the hosted API's format (huggingface_hub reads them)."""
    return {
        "RateLimit": f'"{quota.policy}";r={quota.remaining};t={math.ceil(quota.reset_s)}',
        "RateLimit-Policy": f'"fixed window";"{quota.policy}";q={quota.limit};w={math.ceil(quota.window_s)}',
    }


def route_template(scope: Scope) -> str:
    """The path template of the route that matched (`/models/{model_id:path}`), or NONE (no route did)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else NONE


class Accounting:
    def __init__(self, app: ASGIApp, finish: Callable[[Ticket, int], None], metrics: Metrics) -> None:
        self.app = app
        self.finish = finish
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, object] = scope.setdefault("state", {})
        status = 500  # what the client sees if nothing gets sent (a crash, or a client that left)

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                ticket = state.get("ticket")
                if isinstance(ticket, Ticket) and ticket.quota is not None:
                    names = {name.lower() for name, _ in message.get("headers", [])}
                    extra = [
                        (k.lower().encode(), v.encode())
                        for k, v in quota_headers(ticket.quota).items()
                        if k.lower().encode() not in names
                    ]
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            ticket = state.get("ticket")
            model, tier = NONE, NONE
            if isinstance(ticket, Ticket):
                self.finish(ticket, status)
                model, tier = ticket.spec.id, ticket.tier.name
            self.metrics.request(route_template(scope), model, status, tier, time.perf_counter() - started)
