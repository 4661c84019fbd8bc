"""Add the pages to the API's app: their routes, static files and the CSRF refusal page."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from infergate.web import admin_pages, pages
from infergate.web.config import STATIC_DIR, WebConfig
from infergate.web.session import CsrfRefused, PageAnswer, current

__all__ = ["install"]


def install(app: FastAPI, config: WebConfig) -> None:
    app.state.infergate_web = config
    app.include_router(pages.router)
    app.include_router(admin_pages.router)
    if config.sso is not None:
        from infergate.web import sso

        app.include_router(sso.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(PageAnswer)
    async def _answer(request: Request, exc: PageAnswer) -> Response:
        return exc.response

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, exc: CsrfRefused) -> Response:
        return pages.page(
            request, "error.html", await current(request), 403, title="Form refused",
            message="This form did not carry this page's security token (it may come from an old tab, or from "
            "another site). Reload the page and send it again.",
        )  # fmt: skip
