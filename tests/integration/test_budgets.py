"""Budgets and rate limits in one gateway process: exact under a real race, with the exact errors."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from openai import BadRequestError, OpenAI, RateLimitError

from passerelle.pricing.estimate import estimate_prompt_tokens
from tests.fakes.gateway import GatewayProcess
from tests.integration.budget_helpers import (
    CEILING,
    DEAR_MODEL,
    WORST_CASE,
    budget_config,
    dear_worst_case,
    race,
    race_raw,
    spend,
)


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


# -- attacks: requests that leave out max_tokens, or ask for more than the ceiling ------------

COUNTERS = ["in-process", "redis"]


def attack(counting, tmp_path, upstream, tenant_extra, **overrides):  # type: ignore[no-untyped-def]
    """A gateway with the `dear` model, counting in process or in Redis (``counting``)."""
    overrides.update(counting)
    tenant = "t" + uuid.uuid4().hex[:8]
    config = budget_config(upstream.url, tenant, tenant_extra, **overrides)
    config["models"].append(DEAR_MODEL)
    key = "sk-race-" + uuid.uuid4().hex
    return tenant, key, GatewayProcess(tmp_path / "gw", config, env={"RACE_KEY": key})


def served_rows(gw: GatewayProcess, tenant: str) -> list[dict]:  # type: ignore[type-arg]
    return [r for r in gw.ledger_rows("tenant = ?", (tenant,)) if r["status"] == "ok"]


@pytest.fixture
def counters(request):  # type: ignore[no-untyped-def]
    """Configuration overrides: none (counters in process) or Redis' URL."""
    if getattr(request, "param", "in-process") == "redis":
        return {"redis": request.getfixturevalue("redis_url")}
    return {}


@pytest.mark.parametrize("counters", COUNTERS, indirect=True)
def test_forty_streams_without_max_tokens_stay_within_a_hard_budget(
    counters, tmp_path, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    budget = Decimal(1)
    tenant, key, gw = attack(
        counters, tmp_path, fresh_upstream, {"budgets": [{"usd": 1, "period": "day"}]}
    )
    body = {
        "model": "dear",
        "stream": True,
        "messages": [{"role": "user", "content": "tell me everything #words:10000"}],
    }
    with gw:
        results = asyncio.run(race_raw([gw.url], key, 40, body))
        assert {s for s, _ in results} <= {200, 429}
        served = [b for s, b in results if s == 200]
        _, cost = spend(gw.url, tenant)
        rows = served_rows(gw, tenant)
    assert served and len(rows) == len(served)
    assert cost <= budget + dear_worst_case(estimate_prompt_tokens(body))
    # each stream was held to what its admission reserved, and said why it stopped
    assert all(r["output_tokens"] <= CEILING for r in rows)
    assert all(b'"finish_reason":"length"' in b for b in served)


@pytest.mark.parametrize("counters", COUNTERS, indirect=True)
def test_one_huge_request_without_max_tokens_costs_no_more_than_was_reserved(
    counters, tmp_path, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    tenant, key, gw = attack(
        counters, tmp_path, fresh_upstream, {"budgets": [{"usd": 1, "period": "day"}]}
    )
    messages = [{"role": "user", "content": "lorem " * 10_000 + "#words:20000"}]
    with gw, OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=60) as client:
        answer = client.chat.completions.create(model="dear", messages=messages)  # type: ignore[arg-type]
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage is not None and answer.usage.completion_tokens == CEILING
        assert fresh_upstream.stats()["last_request"]["max_tokens"] == CEILING
        _, cost = spend(gw.url, tenant)
    assert 0 < cost <= dear_worst_case(estimate_prompt_tokens({"messages": messages}))
    assert cost <= Decimal(1)


def test_a_max_tokens_above_the_ceiling_is_capped_and_the_cap_recorded(
    counters, tmp_path, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    tenant, key, gw = attack(
        counters, tmp_path, fresh_upstream, {"budgets": [{"usd": 5, "period": "day"}]}
    )
    messages = [{"role": "user", "content": "go on #words:20000"}]
    with gw, OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="dear",
            max_completion_tokens=50_000,
            messages=messages,  # type: ignore[arg-type]
        )
        answer = raw.parse()
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage is not None and answer.usage.completion_tokens == CEILING
        assert raw.headers["x-passerelle-max-tokens-capped"] == str(CEILING)
        sent = fresh_upstream.stats()["last_request"]
        # the field the client used carries the cap; no second field is added
        assert sent["max_completion_tokens"] == CEILING and "max_tokens" not in sent
        [row] = served_rows(gw, tenant)
    assert row["decision"] == f"max_tokens capped: 50000 -> {CEILING}"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_max_tokens_above_the_ceiling_is_refused_when_the_policy_says_so(
    field, tmp_path, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    _, key, gw = start(
        tmp_path,
        fresh_upstream,
        {"budgets": [{"usd": 5, "period": "day"}]},
        server={"default_max_tokens_ceiling": 1000, "max_tokens_above_ceiling": "refuse"},
    )
    with gw, OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        with pytest.raises(BadRequestError) as exc:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                extra_body={field: 1001},
            )
        err = exc.value.body
        assert err["param"] == field and err["code"] == "integer_above_max_value"
        assert "1000" in err["message"]
        ok = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={field: 1000},
        )
        assert ok.choices[0].message.content
    assert fresh_upstream.stats()["requests"] == 1


def test_n_choices_multiply_the_worst_case(counters, tmp_path, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    # $1 holds four ceilings of `dear` output: n=4 fits, n=5 may produce more than is left
    _, key, gw = attack(
        counters, tmp_path, fresh_upstream, {"budgets": [{"usd": 1, "period": "day"}]}
    )
    messages = [{"role": "user", "content": "hi"}]
    with gw, OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        with pytest.raises(RateLimitError) as exc:
            client.chat.completions.create(model="dear", n=5, messages=messages)  # type: ignore[arg-type]
        assert exc.value.body["code"] == "insufficient_quota"
        assert fresh_upstream.stats()["requests"] == 0
        ok = client.chat.completions.create(model="dear", n=4, messages=messages)  # type: ignore[arg-type]
        assert ok.choices


@pytest.mark.parametrize("counters", COUNTERS, indirect=True)
def test_streams_without_max_tokens_stay_within_tokens_per_minute(
    counters, tmp_path, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    # a ceiling of 300 output tokens: a call may take ~320 of the minute's 2,000 tokens
    tenant, key, gw = attack(
        counters,
        tmp_path,
        fresh_upstream,
        {"rate_limits": {"tpm": 2000}},
        server={"default_max_tokens_ceiling": 300},
    )
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "talk #words:1000"}],
    }
    with gw:
        results = asyncio.run(race_raw([gw.url], key, 25, body))
        assert {s for s, _ in results} <= {200, 429}
        rows = served_rows(gw, tenant)
    assert rows and len(rows) == sum(1 for s, _ in results if s == 200)
    assert sum(r["input_tokens"] + r["output_tokens"] for r in rows) <= 2000
    assert all(r["output_tokens"] <= 300 for r in rows)
