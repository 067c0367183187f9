"""The exact cache over two replicas sharing Redis (and a PostgreSQL ledger): one answer for both.

What one replica stored, the other serves, in either form; tenants stay apart in the shared
store as in one process; and the savings report reads the hits of both from the shared ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.fakes.gateway import GatewayProcess, Sdk
from tests.fakes.upstream import UpstreamProcess
from tests.integration.cache_helpers import (
    ONE_CALL_PUSD,
    admin_get,
    ask,
    cache_config,
    new_tenant,
    sse,
    unique,
)

HEADER = "x-passerelle-cache"


@pytest.fixture(scope="module")
def replicas(
    upstream: UpstreamProcess,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    redis_url: str,
) -> Iterator[list[GatewayProcess]]:
    config = cache_config(upstream.url, store=postgres_url, redis=redis_url)
    root = tmp_path_factory.mktemp("cache-replicas")
    gws = [GatewayProcess(root / f"gw{i}", config) for i in range(2)]
    for gw in gws:
        gw.start()
    yield gws
    for gw in gws:
        gw.stop()


def test_what_one_replica_stored_the_other_serves_in_either_form(
    replicas: list[GatewayProcess], fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    one, other = replicas
    tenant, key = new_tenant(one)
    prompt = unique("shared?")
    fresh_upstream.script({"reply": "answered once for both"})
    first = ask(sdk(one, key), prompt)
    second = ask(sdk(other, key), prompt)
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    assert second.content == first.content
    headers, events = sse(other, key, {"messages": [{"role": "user", "content": prompt}]})
    assert headers[HEADER] == "hit" and events[-1] == "[DONE]"
    assert fresh_upstream.stats()["requests"] == 1

    [row] = [
        r for r in admin_get(one, "/admin/savings?group_by=tenant")["data"] if r["tenant"] == tenant
    ]
    assert (row["requests"], row["cache_lookups"], row["cache_hits"]) == (3, 3, 2)
    assert Decimal(row["saved_usd"]) == 2 * Decimal(ONE_CALL_PUSD) / 10**12
    assert Decimal(row["cost_usd"]) == Decimal(ONE_CALL_PUSD) / 10**12
    assert Decimal(row["cost_without_savings_usd"]) == 3 * Decimal(ONE_CALL_PUSD) / 10**12


def test_in_the_shared_store_one_tenants_entry_is_never_served_to_another(
    replicas: list[GatewayProcess], fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    one, other = replicas
    (_, key_a), (_, key_b) = new_tenant(one), new_tenant(other)
    prompt = unique("my secret?")
    fresh_upstream.script({"reply": "the secret of a"})
    ask(sdk(one, key_a), prompt)
    for gw in replicas:
        theirs = ask(sdk(gw, key_b), prompt)
        assert "secret of a" not in theirs.parse().choices[0].message.content
    assert fresh_upstream.stats()["requests"] == 2
    assert ask(sdk(other, key_a), prompt).headers[HEADER] == "hit"
