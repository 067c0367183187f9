"""Every error Passerelle raises, in one hierarchy, rendered one way.

The API speaks OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, with the
HTTP status the official SDKs map to the right exception class. Each class below fixes its status
and type; raising one anywhere on the request path is enough for the client to get the right
answer. An error is complete once constructed: nothing sets its type or status afterwards. Messages never carry keys or prompts.

    PasserelleError
    ├── ConfigError                      bad or incomplete configuration (start-up, `config check`)
    │   └── ArtefactError                a router artefact that cannot be read (routing/artefact.py)
    ├── RouterTrainingError              outcomes that cannot train a router (`router train`)
    │   └── OutcomesError                an outcomes file's bad row: its line and field
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
        ├── UpstreamRejectedError        an upstream's own 4xx, its status, type, code and param kept
        └── UpstreamError                502 every target failed
            └── UpstreamTimeoutError     504

    ProviderError                        one upstream attempt failed (never a client's answer as is)
    ├── ProviderFailedError              5xx, not JSON, a stream cut short: retried
    │   └── ProviderEngineError          our side of it failed (local engine, answer too large)
    ├── ProviderUnreachableError         no connection could be opened: retried, counts for all
    ├── ProviderTimeoutError             retried; 504 when it was the last
    ├── ProviderBackPressureError        429, or 503 with Retry-After: cools the target, no breaker
    │   └── ProviderOverloadedError      at capacity (Anthropic's 529, the local queue)
    ├── ProviderCredentialError          401/402/403 to the gateway's key: the next target
    └── ProviderRejectedError            the request's fault (400, 413, 422): no retry, no fallback
        └── ProviderNotFoundError        404: the next target may know it

Providers raise ``ProviderError`` subclasses; dispatch decides from the kind whether to retry,
fall back or give up, and the last one's ``to_api_error`` is what the client sees.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class PasserelleError(Exception):
    """Base of every error raised by Passerelle."""


class ConfigError(PasserelleError):
    """The configuration is invalid; the message names the field."""


class ArtefactError(ConfigError):
    """The file is not a router artefact this release can read; the message says why."""


class RouterTrainingError(PasserelleError):
    """The outcomes cannot train a router; the message says what is missing."""


class OutcomesError(RouterTrainingError):
    """An outcomes file cannot be read; the message names the line and the field."""


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


class UpstreamRejectedError(APIError):
    """An upstream refused the request itself: its status, type, code and param reach the client
    as the upstream said them (a ``context_length_exceeded`` stays itself), complete from the
    constructor."""

    def __init__(
        self, message: str, *, status: int, type: str, code: str | None, param: str | None
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        self.type = type
        self.code = code


class ProviderError(PasserelleError):
    """One upstream attempt failed; the subclass says how. Never a client's answer as is: dispatch
    decides from its kind whether to retry the target (``retryable``), try the next one
    (``falls_back``) or give up, and ``to_api_error`` is what a client sees when it was the last.
    ``status`` is the upstream's HTTP status when it answered one."""

    retryable: ClassVar[bool] = True  # another attempt at the same target may succeed
    falls_back: ClassVar[bool] = True  # another target may succeed

    def __init__(self, message: str, *, provider: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status

    def to_api_error(self) -> APIError:
        # an upstream's own error text may quote the prompt: only its status goes to the client
        detail = f"HTTP {self.status}" if self.status is not None else self.message
        return UpstreamError(f"provider {self.provider} failed: {detail}")


class ProviderFailedError(ProviderError):
    """The provider answered badly: a 5xx, an answer that is not JSON, a stream cut short, a
    connection reset mid-answer. Another attempt may do better. When it was the last, an
    upstream's 503 stays a 503 and its 504 a 504; anything else is a 502."""

    def to_api_error(self) -> APIError:
        if self.status == 503:
            return ServiceUnavailableError(
                f"provider {self.provider} is unavailable; try again shortly",
                code="providers_unavailable",
            )
        if self.status == 504:
            return UpstreamTimeoutError(f"provider {self.provider} timed out (HTTP 504)")
        return super().to_api_error()


class ProviderEngineError(ProviderFailedError):
    """Our side of the provider failed (the local engine raised, an answer over
    ``max_response_bytes``): trying the same target again would fail the same way."""

    retryable = False


class ProviderUnreachableError(ProviderError):
    """No connection could be opened (refused, unreachable, DNS): the provider's health, whatever
    the request held."""

    def to_api_error(self) -> APIError:
        return UpstreamError(f"provider {self.provider} could not be reached")


class ProviderTimeoutError(ProviderError):
    """The provider did not answer (or stopped streaming) within the timeout."""

    def to_api_error(self) -> APIError:
        return UpstreamTimeoutError(f"provider {self.provider} timed out")


class ProviderBackPressureError(ProviderError):
    """A rate limit (429) or a 503 with ``Retry-After``: the provider is well and asks us to slow
    down; its ``Retry-After`` (whole seconds, else None) is passed on to the client."""

    def __init__(
        self, message: str, *, provider: str, status: int | None, retry_after: str | None = None
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after if retry_after and retry_after.isdigit() else None

    def _wait(self) -> dict[str, str] | None:
        return {"retry-after": self.retry_after} if self.retry_after else None

    def to_api_error(self) -> APIError:
        if self.status == 429:
            # retries are spent and the provider still says slow down: the client should too,
            # and OpenAI's SDKs only back off (RateLimitError) on a 429
            return RateLimitError(
                f"provider {self.provider} is rate limiting requests; try again shortly",
                headers=self._wait(),
            )
        return ServiceUnavailableError(
            f"provider {self.provider} is unavailable; try again shortly",
            code="providers_unavailable",
            headers=self._wait(),
        )


class ProviderOverloadedError(ProviderBackPressureError):
    """The provider is at capacity (Anthropic's 529, the local engine's full queue)."""

    def to_api_error(self) -> APIError:
        return ServiceUnavailableError(
            f"provider {self.provider} is at capacity; try again shortly",
            code="model_overloaded",
            headers=self._wait(),
        )


class ProviderCredentialError(ProviderError):
    """The provider refused the gateway's own credentials or account (401, 402, 403): the
    operator's to fix, not the client's, whose key is fine; another target may serve."""

    retryable = False

    def to_api_error(self) -> APIError:
        return UpstreamError(
            f"provider {self.provider} refused the gateway's credentials (HTTP {self.status})",
            code="upstream_credentials_refused",
        )


class ProviderRejectedError(ProviderError):
    """The provider refused the request itself (400, 413, 422 and other 4xx): the client's to
    fix, the same at any target, so neither retried nor sent elsewhere. ``type``, ``code`` and
    ``param`` are the upstream's, in OpenAI's terms."""

    retryable = False
    falls_back = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.type = type
        self.code = code
        self.param = param

    def to_api_error(self) -> APIError:
        return UpstreamRejectedError(
            f"provider {self.provider}: {self.message}",
            status=self.status or 400,
            type=self.type,
            code=self.code,
            param=self.param,
        )


class ProviderNotFoundError(ProviderRejectedError):
    """The provider does not know what was asked (404: usually the upstream model): another
    target may, so the call falls back; the last one's 404 reaches the client as such."""

    falls_back = True
