"""Shared pieces of the budget and rate-limit tests: configs, a racing client, ledger totals."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from decimal import Decimal
from typing import Any

import aiohttp

from tests.fakes.gateway import ADMIN_TOKEN, fake_upstream_config

PRICE = {"input": 0.15, "output": 0.60}
# one request: ~10 prompt tokens estimated high, max_tokens 100 -> worst case about $0.0000625;
# the fake upstream reports 10 in / 50 out -> $0.0000315 actual
BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi #usage:10,50,0"}],
}
WORST_CASE = (Decimal(16) * Decimal("0.15") + Decimal(100) * Decimal("0.60")) / Decimal(10**6)

# a dear model for the attacks: $10 in, $60 out per million tokens. Without max_tokens a call may
# produce the configured ceiling (4,096 by default): about $0.246 of output, so four fit in $1;
# a 10,000-word answer would cost $0.60
DEAR_PRICE = {"input": 10, "output": 60}
DEAR_MODEL = {
    "name": "dear",
    "targets": [{"provider": "fake", "upstream_model": "dear-1", "price": DEAR_PRICE}],
}
CEILING = 4096


def dear_worst_case(prompt_tokens: int, output_tokens: int = CEILING) -> Decimal:
    """What one call to ``dear`` may cost at most, from the gateway's own prompt estimate."""
    return (Decimal(prompt_tokens) * 10 + Decimal(output_tokens) * 60) / Decimal(10**6)


def budget_config(
    upstream_url: str, tenant: str, tenant_extra: dict[str, Any], **overrides: Any
) -> dict[str, Any]:
    config = fake_upstream_config(upstream_url, **overrides)
    config["tenants"].append({"name": tenant, "keys": ["env:RACE_KEY"], **tenant_extra})
    return config


async def race(
    urls: list[str],
    key: str,
    n: int,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """n requests at once, spread over the given gateways; returns (status, json) pairs."""
    payload = json.dumps(body or BODY).encode()
    hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> tuple[int, dict[str, Any]]:
            url = urls[i % len(urls)] + "/v1/chat/completions"
            async with session.post(url, data=payload, headers=hdrs) as resp:
                return resp.status, await resp.json(content_type=None)

        return await asyncio.gather(*(one(i) for i in range(n)))


async def race_raw(
    urls: list[str], key: str, n: int, body: dict[str, Any]
) -> list[tuple[int, bytes]]:
    """n requests at once (streamed or not), read to their end; returns (status, body) pairs."""
    payload = json.dumps(body).encode()
    hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> tuple[int, bytes]:
            url = urls[i % len(urls)] + "/v1/chat/completions"
            async with session.post(url, data=payload, headers=hdrs) as resp:
                return resp.status, await resp.read()

        return await asyncio.gather(*(one(i) for i in range(n)))


def spend(gateway_url: str, tenant: str) -> tuple[int, Decimal]:
    req = urllib.request.Request(
        f"{gateway_url}/admin/usage?group_by=tenant",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        rows = json.loads(resp.read())["data"]
    for r in rows:
        if r["tenant"] == tenant:
            return r["requests"] - r["errors"], Decimal(r["cost_usd"])
    return 0, Decimal(0)
