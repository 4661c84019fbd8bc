"""BodyLimit around a tiny Starlette app: 413 JSON by Content-Length, or by counting a streamed body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from infergate.http.middleware import BodyLimit

LIMIT = 100


async def echo_size(request: Request) -> JSONResponse:
    return JSONResponse({"received": len(await request.body())})


def make_app() -> Starlette:
    # As in create_app: BodyLimit is user middleware, inside Starlette's ServerErrorMiddleware.
    return Starlette(routes=[Route("/", echo_size, methods=["POST"])], middleware=[Middleware(BodyLimit, limit=LIMIT)])


def post(content: bytes | AsyncIterator[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/", content=content, headers=headers)

    return asyncio.run(main())


async def chunks(total: int, size: int = 30) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


def assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error_type"] == "payload_too_large"
    assert f"limit is {LIMIT}" in body["error"]


def test_over_the_limit_by_content_length() -> None:
    response = post(b"x" * (LIMIT + 1))
    assert_413(response)
    assert f"at least {LIMIT + 1} bytes" in response.json()["error"]


def test_streamed_body_without_content_length_over_the_limit() -> None:
    response = post(chunks(LIMIT * 3))
    assert_413(response)


def test_streamed_request_really_has_no_content_length() -> None:
    # Guards the test above: it must exercise the counting path, not the header check.
    seen: dict[str, str] = {}

    async def main() -> None:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            seen.update({k.decode(): v.decode() for k, v in scope["headers"]})
            await JSONResponse({})(scope, receive, send)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            await client.post("/", content=chunks(10))

    asyncio.run(main())
    assert "content-length" not in seen


def test_under_the_limit_passes_through() -> None:
    response = post(b"x" * LIMIT)
    assert response.status_code == 200
    assert response.json() == {"received": LIMIT}


def test_streamed_under_the_limit_passes_through() -> None:
    response = post(chunks(LIMIT - 1, size=7))
    assert response.status_code == 200
    assert response.json() == {"received": LIMIT - 1}


def test_get_without_body_passes_through() -> None:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/")

    assert asyncio.run(main()).status_code == 405  # the app's own answer, untouched
