"""Errors that reach clients, in OpenAI's error shape.

Every failure a client can see is a :class:`GatewayError`. HTTP adapters render
it with :meth:`GatewayError.body`; the CLI prints :attr:`message` on one line.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    """A client-visible error: HTTP status, OpenAI ``type``/``code`` and headers."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None
    upstream_kind: str | None = None
    """The provider failure behind this error (``ProviderError.kind``), when there was one."""
    facts: Any = None
    """The pipeline's :class:`~lockgate.pipeline.facts.CallFacts` when a call failed in it."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}

    @property
    def error_class(self) -> str:
        """Short name recorded in the audit log."""
        return self.code or self.type

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamFailed(GatewayError):
    """The model provider failed (5xx, bad answer, connection error)."""

    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


class Unavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class ConfigError(Exception):
    """A configuration file is invalid. ``str()`` is one line naming field and line."""
