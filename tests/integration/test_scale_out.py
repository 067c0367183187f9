"""Two gateway processes sharing PostgreSQL and Redis: budgets and rate limits hold across both."""

from __future__ import annotations

import asyncio
import collections
import uuid
from decimal import Decimal

import pytest

from tests.fakes.gateway import GatewayProcess
from tests.integration.budget_helpers import WORST_CASE, budget_config, race, spend


@pytest.fixture
def replicas(tmp_path, fresh_upstream, postgres_url, redis_url):  # type: ignore[no-untyped-def]
    def start(tenant_extra: dict, n: int = 2):  # type: ignore[no-untyped-def]
        tenant = "t" + uuid.uuid4().hex[:10]
        key = "sk-race-" + uuid.uuid4().hex
        config = budget_config(
            fresh_upstream.url, tenant, tenant_extra, store=postgres_url, redis=redis_url
        )
        gws = [GatewayProcess(tmp_path / f"gw{i}", config, env={"RACE_KEY": key}) for i in range(n)]
        for gw in gws:
            gw.start()
        started.extend(gws)
        return tenant, key, gws

    started: list[GatewayProcess] = []
    yield start
    for gw in started:
        gw.stop()


def test_a_thousand_requests_over_two_replicas_never_overspend(replicas, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    budget = Decimal("0.01")
    tenant, key, gws = replicas({"budgets": [{"usd": 0.01, "period": "day"}]})
    results = asyncio.run(race([g.url for g in gws], key, 1000))
    ok = sum(1 for s, _ in results if s == 200)
    refused = [b for s, b in results if s == 429]
    other = collections.Counter(
        (s, b.get("error", {}).get("code")) for s, b in results if s not in (200, 429)
    )
    assert ok + len(refused) == 1000 and ok > 0 and refused, other
    assert all(b["error"]["code"] == "insufficient_quota" for b in refused)
    served, cost = spend(gws[0].url, tenant)
    assert served == ok == fresh_upstream.stats()["requests"]
    assert cost <= budget + WORST_CASE


def test_rate_limit_is_shared_by_both_replicas(replicas) -> None:  # type: ignore[no-untyped-def]
    _, key, gws = replicas({"rate_limits": {"rpm": 50}})
    results = asyncio.run(race([g.url for g in gws], key, 200))
    assert [s for s, _ in results].count(200) == 50


def test_a_restarted_replica_rebuilds_spend_from_the_ledger(replicas, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tenant, key, gws = replicas({"budgets": [{"usd": 0.01, "period": "month"}]}, n=1)
    asyncio.run(race([gws[0].url], key, 20))
    _, cost_before = spend(gws[0].url, tenant)
    assert cost_before > 0
    gws[0].stop()
    gws[0].start()
    served, cost_after = spend(gws[0].url, tenant)
    assert cost_after == cost_before and served == 20


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workers_share_one_port_and_one_budget(
    tmp_path, fresh_upstream, postgres_url, redis_url
) -> None:  # type: ignore[no-untyped-def]
    tenant = "t" + uuid.uuid4().hex[:10]
    key = "sk-race-" + uuid.uuid4().hex
    config = budget_config(
        fresh_upstream.url,
        tenant,
        {"budgets": [{"usd": 0.005, "period": "day"}]},
        store=postgres_url,
        redis=redis_url,
    )
    gw = GatewayProcess(
        tmp_path / "gw",
        config,
        env={"RACE_KEY": key},
        args=["--workers", "2", "--port", str(free_port())],
    )
    with gw:
        assert "(2 workers)" in "\n".join(gw.banner)
        results = asyncio.run(race([gw.url], key, 400))
        ok = sum(1 for s, _ in results if s == 200)
        assert 0 < ok < 400
        _, cost = spend(gw.url, tenant)
    assert cost <= Decimal("0.005") + WORST_CASE


def test_workers_without_redis_refuse_to_count_budgets_apart(tmp_path, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    config = budget_config(fresh_upstream.url, "solo", {"budgets": [{"usd": 1, "period": "day"}]})
    gw = GatewayProcess(
        tmp_path / "gw",
        config,
        env={"RACE_KEY": "sk-x"},
        args=["--workers", "2", "--port", str(free_port())],
    )
    with pytest.raises(RuntimeError) as exc:
        gw.start()
    assert "needs `redis:`" in str(exc.value)


def test_tokens_per_minute_are_shared_by_both_replicas(replicas) -> None:  # type: ignore[no-untyped-def]
    # each request is admitted at ~16 estimated prompt tokens + 100 max_tokens
    _, key, gws = replicas({"rate_limits": {"tpm": 1000}})
    results = asyncio.run(race([g.url for g in gws], key, 60))
    statuses = [s for s, _ in results]
    # admitted at their estimate (116 tokens), settled at their real count (60): at least as many
    # as fit at the estimate get through, and never more than fit at the real count
    assert 1000 // 116 <= statuses.count(200) <= 1000 // 60
    assert statuses.count(429) == 60 - statuses.count(200)
