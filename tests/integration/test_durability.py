"""A response the client received is in the ledger, even if the gateway dies the next instant.

Each test runs its own gateway and SIGKILLs it (no shutdown handler, no final flush), then reads
the SQLite ledger it left behind.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, fake_upstream_config
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
