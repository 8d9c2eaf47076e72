"""The one error hierarchy. Each error carries the HTTP status and OpenAI-style fields the edges need."""

from __future__ import annotations


class TuneloopError(Exception):
    """Root of every error tuneloop raises on purpose; `message` says how to fix it."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_openai(self) -> dict:
        """The error as the OpenAI API shapes it: {"error": {message, type, param, code}}."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(TuneloopError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(TuneloopError):
    status = 401
    type = "authentication_error"


class Forbidden(TuneloopError):
    status = 403
    type = "permission_error"


class NotFound(TuneloopError):
    status = 404
    type = "not_found_error"


class Conflict(TuneloopError):
    status = 409
    type = "conflict_error"


class RequestTimeout(TuneloopError):
    status = 408
    type = "invalid_request_error"


class PayloadTooLarge(TuneloopError):
    status = 413
    type = "invalid_request_error"


class UnsupportedMediaType(TuneloopError):
    status = 415
    type = "invalid_request_error"


class Retryable(TuneloopError):
    """A refusal the client should simply repeat after `retry_after` seconds (sent as `Retry-After`)."""

    def __init__(self, message: str, *, retry_after: int = 1, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RateLimited(Retryable):
    """This tenant sends more, or more at once, than its limits allow."""

    status = 429
    type = "rate_limit_error"


class Overloaded(Retryable):
    """The server is at capacity; the client should retry after `retry_after` seconds."""

    status = 503
    type = "overloaded_error"


class ServiceUnavailable(Retryable):
    """The store is locked or busy past its short timeout; writes are idempotent, so retrying is safe."""

    status = 503
    type = "service_unavailable_error"


class UpstreamError(TuneloopError):
    """An upstream model server failed or answered something we cannot use."""

    status = 502
    type = "upstream_error"


class ConfigError(TuneloopError):
    """The service's own configuration or files are unusable; the message says what to fix."""

    type = "configuration_error"
