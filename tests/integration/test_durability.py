"""A response the client received is in the ledger, even if the gateway dies the next instant.

Each test runs its own gateway and SIGKILLs it (no shutdown handler, no final flush), then reads
the SQLite ledger it left behind. A call still in flight at the kill is recorded when the gateway
starts again (as ``interrupted``), and every upstream attempt, failed ones included, is a row.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

KEY = TENANT_KEYS["acme"]


@pytest.fixture
def gw(upstream: UpstreamProcess, tmp_path: Path):  # type: ignore[no-untyped-def]
    upstream.reset()
    g = GatewayProcess(tmp_path / "gateway", fake_upstream_config(upstream.url))
    with g:
        yield g


def ledger_ids(gw: GatewayProcess) -> Counter[str]:
    """Request id -> rows, read after the gateway is dead."""
    return Counter(r["request_id"] for r in gw.ledger_rows())


def test_plain_answer_is_in_the_ledger_after_sigkill(gw, sdk) -> None:  # type: ignore[no-untyped-def]
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi #usage:12,5,0"}]
        )
        raw.parse()
    gw.kill()
    request_id = raw.headers["x-request-id"]
    assert ledger_ids(gw) == {request_id: 1}
    [row] = gw.ledger_rows("request_id = ?", (request_id,))
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 12, 5)


def test_streamed_answer_is_in_the_ledger_after_sigkill(gw, sdk) -> None:  # type: ignore[no-untyped-def]
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = list(raw.parse())  # read to data: [DONE]
    gw.kill()
    assert chunks
    assert ledger_ids(gw) == {raw.headers["x-request-id"]: 1}


def test_concurrent_answers_are_each_in_the_ledger_once_after_sigkill(gw) -> None:  # type: ignore[no-untyped-def]
    n = 50
    completed: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        # latencies spread over 0-490 ms, so the kill lands while some are still in flight
        stream = i % 2 == 1
        body = json.dumps(
            {
                "model": "gpt-4o-mini",
                "stream": stream,
                "messages": [{"role": "user", "content": f"request {i} #latency:{i * 10}"}],
            }
        ).encode()
        req = urllib.request.Request(
            gw.base_url + "/chat/completions",
            data=body,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                payload = resp.read()
                request_id = resp.headers["x-request-id"]
        except (OSError, http.client.HTTPException):  # URLError is an OSError
            return  # killed before it completed: it may or may not be in the ledger
        if stream and not payload.endswith(b"data: [DONE]\n\n"):
            return
        with lock:
            completed.append(request_id)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if len(completed) >= n // 2:
                    break
            time.sleep(0.005)
        gw.kill()
        for f in futures:
            f.result()

    assert n // 2 <= len(completed) < n, "the kill should land mid-way through the requests"
    rows = ledger_ids(gw)
    assert sum(rows.values()) <= n
    assert all(count == 1 for count in rows.values()), rows
    missing = [rid for rid in completed if rows[rid] != 1]
    assert missing == []


# every attempt is visible --------------------------------------------------------------------
def admin_usage(gw: GatewayProcess, group_by: str = "tenant") -> list[dict[str, Any]]:
    req = urllib.request.Request(
        f"{gw.url}/admin/usage?group_by={group_by}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return list(json.loads(resp.read())["data"])


def test_a_timed_out_primary_attempt_is_a_ledger_row(upstream, tmp_path, sdk) -> None:  # type: ignore[no-untyped-def]
    """The upstream may bill an attempt the gateway gave up on: it is a row, not a request."""
    upstream.reset()
    config = fake_upstream_config(upstream.url)
    config["providers"][0]["timeout_s"] = 0.5
    upstream.script({"latency_ms": 2000}, {})
    with GatewayProcess(tmp_path / "gw", config) as gw, sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi #usage:12,5,0"}]
        )
        raw.parse()
        rows = gw.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
        usage = admin_usage(gw)
    assert upstream.stats()["requests"] == 2
    assert [(r["attempt"], r["status"], r["error_code"], r["usage_reported"]) for r in rows] == [
        (1, "attempt_failed", "upstream_timeout", 0),
        (2, "ok", None, 1),
    ]
    assert rows[1]["input_tokens"] == 12
    [acme] = [u for u in usage if u["tenant"] == "acme"]
    assert (acme["requests"], acme["errors"], acme["input_tokens"]) == (1, 0, 12)


# calls in flight at SIGKILL ------------------------------------------------------------------
BUDGET_KEY = "sk-inflight-" + "k" * 16
SLOW = {
    "model": "gpt-4o-mini",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "slow #latency:8000 #usage:10,50,0"}],
}


def budget_gateway(upstream: UpstreamProcess, workdir: Path, **overrides: Any) -> GatewayProcess:
    config = fake_upstream_config(upstream.url, **overrides)
    config["tenants"].append(
        {
            "name": "inflight",
            "keys": ["env:BUDGET_KEY"],
            "budgets": [{"usd": 1, "period": "month"}],
        }
    )
    return GatewayProcess(workdir, config, env={"BUDGET_KEY": BUDGET_KEY})


def post(gw: GatewayProcess, body: dict[str, Any], timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(
        gw.base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {BUDGET_KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def send_and_kill(gw: GatewayProcess, upstream: UpstreamProcess, n: int) -> None:
    """n slow calls; SIGKILL once the upstream is serving every one of them."""
    pool = ThreadPoolExecutor(max_workers=n)
    futures = [pool.submit(post, gw, {**SLOW, "user": f"slow-{i}"}) for i in range(n)]
    deadline = time.monotonic() + 20

    def serving() -> int:
        return sum(1 for u in upstream.stats()["users"] if u.startswith("slow-"))

    while serving() < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert serving() == n
    gw.kill()
    gw.stop()  # releases what the dead process's harness held
    for f in futures:
        with pytest.raises((OSError, http.client.HTTPException)):
            f.result()
    pool.shutdown()


def test_calls_in_flight_at_sigkill_are_recorded_at_restart(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The upstream served them, the process died before their rows: the next start records
    each as interrupted, charged at the worst case it reserved, and the budget counts them."""
    upstream.reset()
    gw = budget_gateway(upstream, tmp_path / "gw")
    n = 6
    with gw:
        status, _ = post(gw, {**BUDGET_BODY, "user": "done"})
        assert status == 200
        send_and_kill(gw, upstream, n)
        assert len(gw.ledger_rows()) == 1  # only the call that completed
        gw.start()  # the same data directory: its journal is reconciled
        rows = gw.ledger_rows("status = 'interrupted'")
        [spent] = [u for u in admin_usage(gw) if u["tenant"] == "inflight"]
    assert sorted(r["end_user"] for r in rows) == sorted(f"slow-{i}" for i in range(n))
    [done] = gw.ledger_rows("end_user = 'done'")
    worst = {r["cost_pusd"] for r in rows}
    assert len(worst) == 1 and worst.pop() > done["cost_pusd"]  # the worst case, not the actual
    assert all(r["usage_reported"] == 0 and r["decision"] for r in rows)
    assert spent["requests"] == n + 1
    charged = Decimal(done["cost_pusd"] + sum(r["cost_pusd"] for r in rows)) / 10**12
    assert Decimal(spent["cost_usd"]) == charged  # the report gives the ledger's pico-dollars
    assert not list((tmp_path / "gw" / "passerelle-data").glob("journal-*.jsonl"))  # clean stop


BUDGET_BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi #usage:10,50,0"}],
}


def test_a_stop_sent_as_soon_as_it_is_ready_drains_and_exits_cleanly(
    upstream: UpstreamProcess, tmp_path: Path
) -> None:
    # a supervisor may stop a replica the moment it says it is ready: the shutdown still runs
    for attempt in range(3):
        gw = GatewayProcess(tmp_path / str(attempt), fake_upstream_config(upstream.url))
        gw.start()
        gw.stop()
        assert gw.process is not None
        assert gw.process.returncode == 0, gw.stderr()
        assert "shutting down" in gw.stderr()
