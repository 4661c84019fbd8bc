"""Keep secrets that travel in URLs out of the access log: the identity provider sends the sign-in's one-time
`code` (and `state`) to the SSO callback as query parameters, and uvicorn logs every request's full path."""

from __future__ import annotations

import logging
import re

__all__ = ["SECRET_PARAMS", "RedactQuery", "redact"]

SECRET_PARAMS = ("code", "state", "token", "access_token", "id_token", "session_state", "api_key", "key")
_PARAM = re.compile(r"([?&](?:" + "|".join(SECRET_PARAMS) + r")=)[^&#\s]*", re.IGNORECASE)


def redact(path: str) -> str:
    """``path`` with the values of secret query parameters replaced."""
    return _PARAM.sub(r"\1REDACTED", path)


class RedactQuery(logging.Filter):
    """For uvicorn's access logger, whose record args are (client, method, path, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True
