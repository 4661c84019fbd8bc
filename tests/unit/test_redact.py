"""Secrets in URLs (the SSO callback's one-time code) stay out of the access log."""

from __future__ import annotations

import logging

from infergate.observability.redact import RedactQuery, redact


def test_the_access_log_never_shows_a_sign_in_code() -> None:
    assert redact("/login/sso/callback?code=abc123&state=xyz&iss=https%3A%2F%2Fidp") == (
        "/login/sso/callback?code=REDACTED&state=REDACTED&iss=https%3A%2F%2Fidp"
    )
    assert redact("/v1/models?model=codellama") == "/v1/models?model=codellama"  # only whole parameter names
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', None, None)
    record.args = ("127.0.0.1:5", "GET", "/x?token=ig_secret", "1.1", 200)
    RedactQuery().filter(record)
    assert "ig_secret" not in record.getMessage() and "token=REDACTED" in record.getMessage()
