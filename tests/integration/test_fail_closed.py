"""When the shared state or the ledger vanishes, the gateway refuses (503), never serves unmetered.

Redis: a private ``redis-server`` per test, killed and restarted at will. PostgreSQL: the shared
server behind a ``TcpProxy`` that the test stops, so only this gateway sees it go away.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import APIStatusError, OpenAI, RateLimitError

from tests.fakes.gateway import ADMIN_TOKEN, GatewayProcess, fake_upstream_config
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.upstream import UpstreamProcess

CONTENT = "hi #usage:9000,10,0"  # $0.001356 on gpt-4o-mini, within max_tokens=10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """``redis-server`` on a port of its own, without persistence: a restart starts empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    r = PrivateRedis()
    r.start()
    try:
        yield r
    finally:
        r.kill()


def gateway(
    workdir: Path, upstream: UpstreamProcess, tenant_extra: dict[str, Any], **overrides: Any
) -> tuple[str, str, GatewayProcess]:
    tenant = "fc-" + uuid.uuid4().hex[:10]
    key = "sk-fc-" + uuid.uuid4().hex
    config = fake_upstream_config(upstream.url, **overrides)
    config["tenants"].append({"name": tenant, "keys": ["env:FC_KEY"], **tenant_extra})
    return tenant, key, GatewayProcess(workdir, config, env={"FC_KEY": key})


def ask(gw: GatewayProcess, key: str, **extra: Any) -> Any:
    with OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            max_tokens=10,
            messages=[{"role": "user", "content": CONTENT}],
            **extra,
        )


def refused(gw: GatewayProcess, key: str, **extra: Any) -> APIStatusError:
    with pytest.raises(APIStatusError) as exc:
        ask(gw, key, **extra)
    return exc.value


BUDGET = {"budgets": [{"usd": 0.01, "period": "month"}]}


# --- Redis ---------------------------------------------------------------------------------------


def test_redis_gone_means_503_and_no_upstream_call(
    tmp_path: Path, fresh_upstream: UpstreamProcess, private_redis: PrivateRedis
) -> None:
    _, key, gw = gateway(tmp_path / "gw", fresh_upstream, BUDGET, redis=private_redis.url)
    with gw:
        assert ask(gw, key).status_code == 200
        private_redis.kill()
        for _ in range(3):
            err = refused(gw, key)
            assert err.status_code == 503
            assert err.body["code"] == "budget_store_unavailable"
        err = refused(gw, key, stream=True)
        assert (err.status_code, err.body["code"]) == (503, "budget_store_unavailable")
        err = refused(gw, key, extra_headers={"Idempotency-Key": "k1"})
        assert (err.status_code, err.body["code"]) == (503, "idempotency_store_unavailable")
        assert fresh_upstream.stats()["requests"] == 1
        # a tenant under no budget or limit does not need the counters
        with OpenAI(base_url=gw.base_url, api_key="sk-test-acme", max_retries=0) as client:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )


def test_a_gateway_started_while_redis_is_down_answers_503(
    tmp_path: Path, fresh_upstream: UpstreamProcess
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    _, key, gw = gateway(tmp_path / "gw", fresh_upstream, BUDGET, redis=dead)
    with gw:
        with urllib.request.urlopen(gw.url + "/health", timeout=10) as resp:
            assert json.loads(resp.read()) == {"status": "ok"}
        err = refused(gw, key)
        assert (err.status_code, err.body["code"]) == (503, "budget_store_unavailable")
        assert "refused rather than passed unmetered" in err.body["message"]
        assert fresh_upstream.stats()["requests"] == 0
        assert gw.process is not None and gw.process.poll() is None


def test_an_emptied_redis_is_reseeded_from_the_ledger_so_the_budget_still_holds(
    tmp_path: Path, fresh_upstream: UpstreamProcess, private_redis: PrivateRedis
) -> None:
    # $0.01 a month; each call costs $0.001356 (its prompt is far longer than the estimate) and
    # reserves far less: 8 calls fit, the 9th not
    _, key, gw = gateway(tmp_path / "gw", fresh_upstream, BUDGET, redis=private_redis.url)
    with gw:
        for _ in range(7):
            ask(gw, key)
        private_redis.kill()
        assert refused(gw, key).status_code == 503
        private_redis.start()  # empty: no persistence
        served = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                ask(gw, key)
            except RateLimitError as exc:
                assert exc.body["code"] == "insufficient_quota"
                break
            except APIStatusError as exc:  # the pool may need one failed try to reconnect
                assert exc.status_code == 503, exc.body
                time.sleep(0.1)
                continue
            served += 1
            assert served < 20, "the budget no longer holds after Redis came back empty"
        assert served == 1
        assert fresh_upstream.stats()["requests"] == 8


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[TcpProxy]:
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        yield proxy


def usage_rows(gw: GatewayProcess) -> list[dict[str, Any]]:
    req = urllib.request.Request(
        f"{gw.url}/admin/usage?group_by=tenant", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["data"]


def ledger_ids(tenant: str) -> set[str]:
    import asyncio

    import asyncpg

    async def fetch() -> set[str]:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        try:
            rows = await conn.fetch("SELECT request_id FROM usage WHERE tenant = $1", tenant)
        finally:
            await conn.close()
        return {r[0] for r in rows}

    return asyncio.run(fetch())


def test_postgres_gone_means_503_never_an_unrecorded_200(
    tmp_path: Path, fresh_upstream: UpstreamProcess, pg_proxy: TcpProxy
) -> None:
    tenant, key, gw = gateway(
        tmp_path / "gw",
        fresh_upstream,
        {},
        store=f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/test",
    )
    answered: list[str] = []
    with gw:
        answered.append(ask(gw, key).headers["x-request-id"])
        pg_proxy.stop()
        codes = []
        for _ in range(4):
            try:
                answered.append(ask(gw, key).headers["x-request-id"])
            except APIStatusError as exc:
                assert exc.status_code == 503, exc.body
                codes.append(exc.body["code"])
        assert codes == ["ledger_unavailable"] * 4
        # the first call after the cut may have reached upstream (nobody knew yet); none since
        upstream_during_outage = fresh_upstream.stats()["requests"]
        assert upstream_during_outage - 1 <= 1
        err = refused(gw, key, stream=True)
        assert (err.status_code, err.body["code"]) == (503, "ledger_unavailable")
        # a key the gateway has not seen yet would be looked up in the ledger: 503 as well
        err = refused(gw, "sk-unknown-" + uuid.uuid4().hex)
        assert (err.status_code, err.body["code"]) == (503, "ledger_unavailable")
        with pytest.raises(urllib.error.HTTPError) as http:
            usage_rows(gw)
        assert http.value.code == 503
        assert json.loads(http.value.read())["error"]["code"] == "ledger_unavailable"
        http.value.close()
        assert fresh_upstream.stats()["requests"] == upstream_during_outage

        pg_proxy.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                answered.append(ask(gw, key).headers["x-request-id"])
                break
            except APIStatusError as exc:
                assert (exc.status_code, exc.body["code"]) == (503, "ledger_unavailable")
                assert time.monotonic() < deadline, "the ledger did not come back"
                time.sleep(0.2)
        answered.append(ask(gw, key).headers["x-request-id"])
    # every 200 the gateway gave is in the ledger
    assert set(answered) <= ledger_ids(tenant)
    assert len(answered) == 3
