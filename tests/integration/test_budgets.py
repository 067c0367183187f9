"""Budgets and rate limits in one gateway process: exact under a real race, with the exact errors."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from openai import OpenAI, RateLimitError

from tests.fakes.gateway import GatewayProcess
from tests.integration.budget_helpers import WORST_CASE, budget_config, race, spend


def start(tmp_path, upstream, tenant_extra, **overrides):  # type: ignore[no-untyped-def]
    tenant = "t" + uuid.uuid4().hex[:8]
    config = budget_config(upstream.url, tenant, tenant_extra, **overrides)
    key = "sk-race-" + uuid.uuid4().hex
    return tenant, key, GatewayProcess(tmp_path / "gw", config, env={"RACE_KEY": key})


def test_a_thousand_concurrent_requests_never_overspend(tmp_path, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    budget = Decimal("0.01")
    tenant, key, gw = start(tmp_path, fresh_upstream, {"budgets": [{"usd": 0.01, "period": "day"}]})
    with gw:
        results = asyncio.run(race([gw.url], key, 1000))
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 429]
        assert len(ok) + len(refused) == 1000
        assert ok and refused
        assert all(r[1]["error"]["code"] == "insufficient_quota" for r in refused)
        served, cost = spend(gw.url, tenant)
    assert served == len(ok)
    assert cost <= budget + WORST_CASE
    # the reservation holds the worst case, so nearly every served request is affordable
    assert fresh_upstream.stats()["requests"] == len(ok)


def test_hard_budget_error_names_the_budget_and_its_reset(tmp_path, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    _, key, gw = start(
        tmp_path,
        fresh_upstream,
        {"budgets": [{"usd": 0.00001, "period": "month", "feature": "summarize"}]},
    )
    with gw, OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        with pytest.raises(RateLimitError) as exc:
            client.chat.completions.create(
                model="gpt-4o-mini",
                max_tokens=100,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"X-Passerelle-Feature": "summarize"},
            )
        err = exc.value.body
        assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
        assert "feature summarize" in err["message"] and "per month" in err["message"]
        assert "resets at" in err["message"]
        assert int(exc.value.response.headers["retry-after"]) > 0
        # another feature of the same tenant is not limited by it
        ok = client.chat.completions.create(
            model="gpt-4o-mini",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Passerelle-Feature": "chat"},
        )
        assert ok.choices[0].message.content


def test_soft_budget_lets_calls_through_and_flags_them(tmp_path, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    _, key, gw = start(
        tmp_path, fresh_upstream, {"budgets": [{"usd": 0.00001, "period": "day", "kind": "soft"}]}
    )
    with gw, OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.status_code == 200
        assert raw.headers["x-passerelle-budget-warning"] == "soft budget exceeded"


def test_requests_per_minute_are_exact_under_a_race(tmp_path, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    _, key, gw = start(tmp_path, fresh_upstream, {"rate_limits": {"rpm": 37}})
    with gw:
        results = asyncio.run(race([gw.url], key, 200))
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 37
    limited = [b for s, b in results if s == 429]
    assert len(limited) == 163
    assert all(b["error"]["code"] == "rate_limit_exceeded" for b in limited)
    assert "37 requests per minute" in limited[0]["error"]["message"]


def test_tokens_per_minute_count_prompt_and_max_tokens(tmp_path, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    # each request is admitted at ~16 estimated prompt tokens + 100 max_tokens
    _, key, gw = start(tmp_path, fresh_upstream, {"rate_limits": {"tpm": 1000}})
    with gw:
        results = asyncio.run(race([gw.url], key, 50))
    statuses = [s for s, _ in results]
    # admitted at their estimate (116 tokens), settled at their real count (60): at least as many
    # as fit at the estimate get through, and never more than fit at the real count
    assert 1000 // 116 <= statuses.count(200) <= 1000 // 60
    assert statuses.count(429) == 50 - statuses.count(200)
