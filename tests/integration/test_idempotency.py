"""``Idempotency-Key`` through a real gateway: one upstream call, one charge, the same answer.

Each case runs twice: with the in-process key store (embedded) and with Redis (``redis:`` set).
The gateway is shared by the module; every test makes tenants of its own through the admin API,
so its ledger rows and keys are its own whatever ran before.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from openai import BadRequestError, ConflictError, OpenAI

from tests.fakes.gateway import ADMIN_TOKEN, GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

# 1000 in, 2000 out at $0.15 / $0.60 per million
PROMPT = "tell me something #usage:1000,2000,0"
ONE_CALL = Decimal("0.00135")
REPLAY = "x-passerelle-idempotent-replay"


@pytest.fixture(scope="module", params=["embedded", "redis"])
def gw(
    request: pytest.FixtureRequest,
    upstream: UpstreamProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    overrides: dict[str, Any] = {}
    if request.param == "redis":
        overrides["redis"] = request.getfixturevalue("redis_url")
    workdir = tmp_path_factory.mktemp(f"idem-{request.param}")
    with GatewayProcess(workdir, fake_upstream_config(upstream.url, **overrides)) as g:
        yield g


def new_tenant(gw: GatewayProcess) -> tuple[str, str]:
    """A tenant no other test uses, and a key for it (created through the admin API)."""
    tenant = "idem-" + uuid.uuid4().hex[:10]
    req = urllib.request.Request(
        f"{gw.url}/admin/keys",
        data=json.dumps({"tenant": tenant, "create_tenant": True}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return tenant, json.loads(resp.read())["key"]


def tenant_cost(gw: GatewayProcess, tenant: str) -> Decimal:
    req = urllib.request.Request(
        f"{gw.url}/admin/usage?group_by=tenant", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        rows = json.loads(resp.read())["data"]
    return sum((Decimal(r["cost_usd"]) for r in rows if r["tenant"] == tenant), Decimal(0))


def create(client: OpenAI, idem: str, content: str = PROMPT, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": content}],
        extra_headers={"Idempotency-Key": idem},
        **extra,
    )


def test_same_key_and_body_replays_the_first_answer_with_one_upstream_call_and_one_charge(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    tenant, key = new_tenant(gw)
    idem = uuid.uuid4().hex
    with sdk(gw, key) as client:
        first = create(client, idem)
        second = create(client, idem)
    assert first.status_code == second.status_code == 200
    assert REPLAY not in first.headers
    assert second.headers[REPLAY] == first.headers["x-request-id"]
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert second.content == first.content
    assert second.headers["x-passerelle-target"] == first.headers["x-passerelle-target"]
    assert Decimal(first.headers["x-passerelle-cost-usd"]) == ONE_CALL
    assert second.headers["x-passerelle-cost-usd"] == "0"  # the replay itself is free
    assert fresh_upstream.stats()["requests"] == 1

    rows = gw.ledger_rows("tenant = ?", (tenant,))
    assert [(r["request_id"], r["status"]) for r in rows] == [
        (first.headers["x-request-id"], "ok"),
        (second.headers["x-request-id"], "replayed"),
    ]
    assert rows[0]["cost_pusd"] == int(ONE_CALL * 10**12)
    assert rows[1]["cost_pusd"] == 0
    assert rows[1]["input_tokens"] == rows[1]["output_tokens"] == 0
    assert tenant_cost(gw, tenant) == ONE_CALL


@pytest.mark.parametrize(
    "other_body",
    [
        pytest.param({"content": "something else entirely"}, id="other-messages"),
        pytest.param({"max_tokens": 7}, id="other-parameters"),
    ],
)
def test_same_key_with_another_body_is_refused_as_reused(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, other_body: dict[str, Any]
) -> None:
    _, key = new_tenant(gw)
    idem = uuid.uuid4().hex
    with sdk(gw, key) as client:
        create(client, idem)
        with pytest.raises(ConflictError) as exc:
            create(client, idem, **other_body)
        # the stored answer is still there for the original body
        again = create(client, idem)
    assert exc.value.status_code == 409
    assert exc.value.body["code"] == "idempotency_key_reused"
    assert exc.value.body["param"] == "Idempotency-Key"
    assert again.headers[REPLAY]
    assert fresh_upstream.stats()["requests"] == 1


def lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


async def _post(
    session: aiohttp.ClientSession,
    gw: GatewayProcess,
    key: str,
    idem: str,
    content: str,
    delay: float = 0.0,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    await asyncio.sleep(delay)
    async with session.post(
        f"{gw.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem},
    ) as resp:
        return resp.status, await resp.json(), lower(resp.headers)


async def _duplicates(
    gw: GatewayProcess, key: str, idem: str, content: str, n: int
) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    async with aiohttp.ClientSession() as session:
        first = asyncio.create_task(_post(session, gw, key, idem, content))
        rest = [
            asyncio.create_task(_post(session, gw, key, idem, content, 0.15 + i * 0.01))
            for i in range(n - 1)
        ]
        return [await first, *[await t for t in rest]]


def test_a_duplicate_sent_while_the_first_runs_never_reaches_upstream_twice(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    tenant, key = new_tenant(gw)
    idem = uuid.uuid4().hex
    content = PROMPT + " #latency:800"
    results = asyncio.run(_duplicates(gw, key, idem, content, 5))
    # one of them ran (the first sent, unless the machine is very slow); the others did not
    originals = [r for r in results if r[0] == 200 and REPLAY not in r[2]]
    assert len(originals) == 1, results
    first = originals[0]
    dups = [r for r in results if r is not first]
    for status, body, headers in dups:
        assert status in (200, 409), body
        if status == 409:
            assert body["error"]["code"] == "idempotency_key_in_progress"
        else:
            assert headers[REPLAY] == first[2]["x-request-id"]
    # sent 150 ms into an 800 ms answer: at least one of them found it still running
    assert any(status == 409 for status, _, _ in dups)
    assert fresh_upstream.stats()["requests"] == 1
    assert tenant_cost(gw, tenant) == ONE_CALL
    # once the first is done, a retry gets its answer
    results = asyncio.run(_duplicates(gw, key, idem, content, 1))
    assert results[0][0] == 200 and results[0][2][REPLAY] == first[2]["x-request-id"]
    assert results[0][1] == first[1]
    assert fresh_upstream.stats()["requests"] == 1


def test_a_failed_first_attempt_frees_the_key_so_the_retry_runs(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    tenant, key = new_tenant(gw)
    idem = uuid.uuid4().hex
    fresh_upstream.script({"status": 400, "error": {"code": "invalid_value", "param": "top_p"}})
    with sdk(gw, key) as client:
        with pytest.raises(BadRequestError) as exc:
            create(client, idem)
        assert exc.value.body["code"] == "invalid_value"
        retry = create(client, idem)
        replay = create(client, idem)
    assert retry.status_code == 200 and REPLAY not in retry.headers
    assert replay.headers[REPLAY] == retry.headers["x-request-id"]
    assert fresh_upstream.stats()["requests"] == 2
    rows = gw.ledger_rows("tenant = ?", (tenant,))
    assert [r["status"] for r in rows] == ["error", "ok", "replayed"]
    assert tenant_cost(gw, tenant) == ONE_CALL


def test_keys_are_per_tenant_so_another_tenant_gets_its_own_answer(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    tenant_a, key_a = new_tenant(gw)
    tenant_b, key_b = new_tenant(gw)
    idem = uuid.uuid4().hex
    with sdk(gw, key_a) as a, sdk(gw, key_b) as b:
        first_a = create(a, idem)
        first_b = create(b, idem)  # same key, same body, other tenant
        other_body_b = None
        with pytest.raises(ConflictError):
            other_body_b = create(b, idem, "not what b sent first")
    assert other_body_b is None
    assert REPLAY not in first_b.headers
    assert first_b.headers["x-request-id"] != first_a.headers["x-request-id"]
    assert json.loads(first_b.content)["id"] != json.loads(first_a.content)["id"]
    assert fresh_upstream.stats()["requests"] == 2
    assert tenant_cost(gw, tenant_a) == tenant_cost(gw, tenant_b) == ONE_CALL


def test_a_streamed_request_replays_as_the_same_stream(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    tenant, key = new_tenant(gw)
    idem = uuid.uuid4().hex
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": PROMPT + " #words:5"}],
    }

    async def twice() -> list[tuple[int, str, dict[str, str]]]:
        out = []
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.post(
                    f"{gw.base_url}/chat/completions",
                    json=body,
                    headers={
                        "Authorization": f"Bearer {key}",
                        "Idempotency-Key": idem,
                    },
                ) as resp:
                    out.append((resp.status, await resp.text(), lower(resp.headers)))
        return out

    (s1, text1, h1), (s2, text2, h2) = asyncio.run(twice())
    assert s1 == s2 == 200
    assert h2["content-type"].startswith("text/event-stream")
    assert h2[REPLAY] == h1["x-request-id"]
    assert text2 == text1
    events = [e.removeprefix("data: ") for e in text2.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == "w1 w2 w3 w4 w5"
    assert chunks[-1]["usage"]["completion_tokens"] == 2000
    assert fresh_upstream.stats()["requests"] == 1
    rows = gw.ledger_rows("tenant = ?", (tenant,))
    assert [(r["status"], r["stream"]) for r in rows] == [("ok", 1), ("replayed", 1)]
    assert rows[1]["cost_pusd"] == 0
    assert tenant_cost(gw, tenant) == ONE_CALL


def test_a_streamed_replay_reads_with_the_sdk(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    _, key = new_tenant(gw)
    idem = uuid.uuid4().hex
    texts = []
    with sdk(gw, key) as client:
        for _ in range(2):
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                stream=True,
                messages=[{"role": "user", "content": "hi #words:3"}],
                extra_headers={"Idempotency-Key": idem},
            )
            texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    assert texts == ["w1 w2 w3", "w1 w2 w3"]
    assert fresh_upstream.stats()["requests"] == 1


def test_an_idempotency_key_longer_than_255_characters_is_refused(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    _, key = new_tenant(gw)
    with sdk(gw, key) as client, pytest.raises(BadRequestError) as exc:
        create(client, "k" * 256)
    assert exc.value.body["param"] == "Idempotency-Key"
    assert fresh_upstream.stats()["requests"] == 0


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_stored_answers_are_bounded_by_bytes_in_one_process(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """400 answers of ~129 KB under distinct keys once grew the gateway by ~50 MB; with a 2 MiB
    bound the store forgets the oldest and the process stays flat."""
    config = fake_upstream_config(upstream.url, server={"idempotency_max_bytes": 2 * 1024 * 1024})
    with GatewayProcess(tmp_path / "bounded", config) as g:
        assert g.process is not None
        body = json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "big #words:19000"}]}
        ).encode()

        async def send(keys: range) -> None:
            headers = {"Authorization": "Bearer sk-test-acme", "Content-Type": "application/json"}
            async with aiohttp.ClientSession() as http:
                for i in keys:
                    headers["Idempotency-Key"] = f"big-{i}"
                    url = g.base_url + "/chat/completions"
                    async with http.post(url, data=body, headers=headers) as resp:
                        assert resp.status == 200
                        assert len(await resp.read()) > 120_000

        async def burst(start: int, n: int) -> None:
            await asyncio.gather(*(send(range(start + j, start + n, 8)) for j in range(8)))

        asyncio.run(burst(0, 40))  # warm-up: pools, buffers, the first allocations
        before = _rss_bytes(g.process.pid)
        asyncio.run(burst(40, 400))
        grown = _rss_bytes(g.process.pid) - before
    assert grown < 24 * 1024 * 1024, f"the gateway grew by {grown / 2**20:.1f} MiB"
