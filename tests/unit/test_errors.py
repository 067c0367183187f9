"""Errors are complete once constructed: the class fixes status and type, nothing patches them."""

from __future__ import annotations

from decimal import Decimal

from passerelle.errors import HTTPStatusError, InsufficientQuotaError, RateLimitError
from passerelle.limits.counters import Refusal
from passerelle.limits.rules import BudgetRule
from passerelle.pipeline.budget import refusal_error


def test_insufficient_quota_is_a_429_of_its_own_type() -> None:
    err = InsufficientQuotaError("budget exceeded")
    assert isinstance(err, RateLimitError) and err.status == 429
    assert err.body()["error"] == {
        "message": "budget exceeded",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    # the margin floor keeps its own code under the same type
    floor = InsufficientQuotaError("margin floor reached", code="margin_floor")
    assert (floor.type, floor.code) == ("insufficient_quota", "margin_floor")
    # and a plain rate limit is not touched by either
    assert (RateLimitError("slow down").type, RateLimitError.type) == (
        "rate_limit_error",
        "rate_limit_error",
    )


def test_a_hard_budget_refusal_is_built_as_insufficient_quota() -> None:
    rule = BudgetRule(
        scope="tenant:acme", label="tenant acme", usd=Decimal(10), period="month", hard=True
    )
    err = refusal_error(Refusal(rule=rule, used=0, retry_after_s=60), at=1_767_225_600.0)
    assert type(err) is InsufficientQuotaError
    assert err.headers == {"retry-after": "60"}
    assert "budget exceeded" in err.message


def test_an_http_refusal_takes_its_type_from_its_status() -> None:
    client = HTTPStatusError("Request Header Fields Too Large", status=431)
    server = HTTPStatusError("Service Unavailable", status=503)
    assert (client.status, client.type) == (431, "invalid_request_error")
    assert (server.status, server.type) == (503, "server_error")
    # the class itself is not changed by an instance
    assert HTTPStatusError.status == 500
