"""Every error Passerelle raises, in one hierarchy, rendered one way.

The API speaks OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, with the
HTTP status the official SDKs map to the right exception class. Each class below fixes its status
and type; raising one anywhere on the request path is enough for the client to get the right
answer. An error is complete once constructed: nothing sets its type or status afterwards. Messages never carry keys or prompts.

    PasserelleError
    ├── ConfigError                      bad or incomplete configuration (start-up, `config check`)
    ├── StoreError                       the ledger or shared state is unreachable
    │   └── StateRecoveringError         Redis lost its state; replicas are re-registering
    └── APIError                         anything a client sees
        ├── InvalidRequestError          400 invalid_request_error
        ├── AuthenticationError          401 authentication_error
        ├── PermissionDeniedError        403 permission_error
        ├── NotFoundError                404 not_found_error (unknown model, unknown route)
        ├── MethodNotAllowedError        405
        ├── ConflictError                409 (idempotency key reused with another body)
        ├── RequestTooLargeError         413
        ├── RateLimitError               429 rate_limit_error (rate limits, upstream back-pressure)
        │   └── InsufficientQuotaError   429 insufficient_quota (hard budget, margin floor)
        ├── ServiceUnavailableError      503 (local queue full, store down under a hard budget)
        ├── HTTPStatusError              any other status the HTTP server refused a request with
        └── UpstreamError                502 every target failed
            └── UpstreamTimeoutError     504

Providers raise ``ProviderError`` (not an APIError: it never reaches a client as is); dispatch
decides from it whether to retry, fall back or give up with an ``UpstreamError``.
"""

from __future__ import annotations

from typing import Any

import orjson


class PasserelleError(Exception):
    """Base of every error raised by Passerelle."""


class ConfigError(PasserelleError):
    """The configuration is invalid; the message names the field."""


class StoreError(PasserelleError):
    """The ledger or the shared state could not be reached."""


class StateRecoveringError(StoreError):
    """Redis lost the shared state moments ago; decisions wait until every replica put back
    what it holds (``store/redis.py``)."""

    def __init__(self, left_ms: int) -> None:
        super().__init__(
            "redis lost the shared state (restarted empty or flushed); it is being rebuilt from "
            f"the ledger and the replicas, decisions resume in {max(left_ms, 1)} ms"
        )
        self.left_ms = left_ms


class APIError(PasserelleError):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequestError(APIError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(APIError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(APIError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFoundError(APIError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class MethodNotAllowedError(APIError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class ConflictError(APIError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class RequestTooLargeError(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(APIError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class InsufficientQuotaError(RateLimitError):
    """The tenant's money is spent (a hard budget, a margin floor): OpenAI's own type for it, so
    clients tell it from a short rate limit that waiting would clear."""

    type = "insufficient_quota"
    code = "insufficient_quota"


class HTTPStatusError(APIError):
    """A refusal by the HTTP server itself, with a status no other class names: complete from
    its constructor, its type following the status (a client's fault below 500)."""

    def __init__(self, message: str, *, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status = status
        self.type = "invalid_request_error" if status < 500 else "server_error"


class ServiceUnavailableError(APIError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class UpstreamError(APIError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ProviderError(PasserelleError):
    """One upstream attempt failed. ``retryable`` says whether another attempt may succeed."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retryable: bool = False,
        timeout: bool = False,
        overloaded: bool = False,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.overloaded = overloaded
        # the upstream's Retry-After, passed on when its 429 or 503 reaches the client
        self.retry_after = retry_after if retry_after and retry_after.isdigit() else None
        self.message = message
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.timeout = timeout

    def to_api_error(self) -> APIError:
        """What a client sees when this was the last failure: client errors pass through."""
        if self.status in (400, 413, 422):
            return InvalidRequestError(
                f"provider {self.provider} rejected the request: {self.message}",
                code="upstream_rejected",
            )
        wait = {"retry-after": self.retry_after} if self.retry_after else None
        if self.overloaded:
            return ServiceUnavailableError(
                f"provider {self.provider} is at capacity; try again shortly",
                code="model_overloaded",
                headers=wait,
            )
        if self.status == 429:
            # retries are spent and the provider still says slow down: the client should too,
            # and OpenAI's SDKs only back off (RateLimitError) on a 429
            return RateLimitError(
                f"provider {self.provider} is rate limiting requests; try again shortly",
                headers=wait,
            )
        if self.status == 503 and self.retry_after:  # back-pressure, with a date: not a 502
            return ServiceUnavailableError(
                f"provider {self.provider} is unavailable; try again shortly",
                code="providers_unavailable",
                headers=wait,
            )
        if self.timeout:
            return UpstreamTimeoutError(f"provider {self.provider} timed out")
        # an upstream's own error text may quote the prompt: only its status goes to the client
        detail = f"HTTP {self.status}" if self.status is not None else self.message
        return UpstreamError(f"provider {self.provider} failed: {detail}")
