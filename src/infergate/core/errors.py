"""The errors infergate raises, as one tree. Each has a stable ``kind``; HTTP statuses live in http/errors.py.

InfergateError
├── ValidationError        bad parameters or inputs that parse (TGI's "Input validation error: ...")
├── BadRequestError        a body that cannot be understood at all (malformed JSON, wrong shape)
├── UnauthorizedError      no valid token where one is needed
├── ForbiddenError         the caller's tier may not use this model or route
├── RateLimitedError       a tier limit is reached (carries the quota, for RateLimit headers)
├── NotFoundError          no such thing (a user, a token)
│   └── ModelNotFoundError no catalog entry has that id
├── PayloadTooLargeError   body over the configured limit
├── OverloadedError        the engine's waiting queue is full
├── ModelLoadingError      the model is not ready yet (carries an estimated time)
├── ModelLoadFailedError   the model could not be loaded (carries the cause)
├── GenerationError        the model failed while generating
│   └── ReplicaLostError   a remote engine failed mid-answer (a caller that has seen nothing may run it again)
├── UpstreamUnavailableError  no replica of a remote model answers (carries when to retry)
└── ShuttingDownError      the server is stopping and takes no new work
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BadRequestError",
    "ForbiddenError",
    "Quota",
    "RateLimitedError",
    "ReplicaLostError",
    "UnauthorizedError",
    "UpstreamUnavailableError",
    "GenerationError",
    "InfergateError",
    "ModelLoadFailedError",
    "ModelLoadingError",
    "ModelNotFoundError",
    "NotAcceptableError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "ShuttingDownError",
    "ValidationError",
]


class InfergateError(Exception):
    """Base of every error a client may see. ``message`` is shown to the user as is."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationError(InfergateError):
    """Parameters or inputs break a rule; the message names the rule (TGI's words where TGI has them).

    ``param`` is the request field at fault, as the protocol that checked it names it (OpenAI's error body
    carries it); ``detail`` is the message without TGI's "Input validation error: " prefix.
    """

    kind = "validation"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(f"Input validation error: {message}")
        self.detail = message
        self.param = param


class BadRequestError(InfergateError):
    """``param``: the request field at fault, where one is (OpenAI's error body carries it)."""

    kind = "bad_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnauthorizedError(InfergateError):
    kind = "unauthorized"


class ForbiddenError(InfergateError):
    kind = "forbidden"


@dataclass(frozen=True, slots=True)
class Quota:
    """Where a caller stands against one limit, as the IETF RateLimit headers tell it."""

    policy: str  # "api" (requests), "tokens", "concurrency"
    limit: int
    remaining: int
    reset_s: float
    window_s: float


class RateLimitedError(InfergateError):
    kind = "rate_limited"

    def __init__(self, message: str, quota: Quota) -> None:
        super().__init__(message)
        self.quota = quota


class NotFoundError(InfergateError):
    kind = "not_found"


class ModelNotFoundError(NotFoundError):
    def __init__(self, model_id: str, available: list[str]) -> None:
        served = ", ".join(available) or "none"
        super().__init__(
            f"Model {model_id} is not served here. Models served: {served}. GET /v1/models lists them with their tasks."
        )
        self.model_id = model_id


class PayloadTooLargeError(InfergateError):
    kind = "payload_too_large"


class NotAcceptableError(InfergateError):
    """The Accept header asks for a format the task cannot answer in."""

    kind = "not_acceptable"


class OverloadedError(InfergateError):
    kind = "overloaded"

    def __init__(self) -> None:
        super().__init__("Model is overloaded")


class ModelLoadingError(InfergateError):
    kind = "loading"

    def __init__(self, model_id: str, estimated_time: float, waited_s: float = 0.0) -> None:
        message = f"Model {model_id} is currently loading"
        if waited_s:  # the request waited as long as the server allows: say so, and when to come back
            message += (
                f"; this request waited {waited_s:g} s (the server's `wait_for_model_s`) and the load goes on. "
                f"Retry in about {max(1, round(estimated_time))} s"
            )
        super().__init__(message)
        self.estimated_time = estimated_time


class ModelLoadFailedError(InfergateError):
    kind = "load_failed"

    def __init__(self, model_id: str, cause: str) -> None:
        super().__init__(
            f"Model {model_id} failed to load: {cause}. Check the model's `source` in the catalog "
            "and the server log; the load is retried on the next request."
        )


class GenerationError(InfergateError):
    kind = "generation"

    def __init__(self, cause: str) -> None:
        super().__init__(f"Request failed during generation: {cause}")


class UpstreamUnavailableError(InfergateError):
    """Every replica of a remote model refused or failed the request before it started."""

    kind = "unavailable"

    def __init__(self, model_id: str, causes: list[str], retry_after_s: float) -> None:
        tried = "; ".join(causes) or "every replica is marked down after recent failures"
        super().__init__(
            f"Model {model_id} is served by remote engines and none could take this request ({tried}). "
            f"Retry in about {max(1, round(retry_after_s))} s; GET /v1/models shows each replica's state."
        )
        self.retry_after_s = retry_after_s


class ReplicaLostError(GenerationError):
    """The remote engine answering died mid-answer. A streamed answer ends with it; a whole (non-streamed) answer
    has sent nothing yet, so the gateway runs it once more on another replica."""


class ShuttingDownError(InfergateError):
    kind = "unavailable"

    def __init__(self) -> None:
        super().__init__("The server is shutting down; retry against another instance or after it restarts.")
