"""Upstream faults at scripted rates: 5xx, 429 with ``retry-after``, slow answers, resets,
truncated streams, invalid JSON.

A seeded schedule of faults is queued on the fake upstream, one per attempt; requests go one at a
time, so the upstream's request counter says exactly which attempts each request consumed. For
every request: attempts never exceed 1 + ``max_retries``; it stops at the first good answer; the
client's error says what the last fault was; the ledger has exactly one row, with the attempt
count and, for an answer, the exact cost of the usage the upstream reported.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.gateway import openai_provider as provider
from tests.fakes.upstream import UpstreamProcess

MAX_RETRIES = 2
TIMEOUT_S = 0.3
PLAIN_FAULTS = {
    "ok": 50,
    "500": 10,
    "503": 5,
    "429": 10,
    "slow": 4,
    "reset": 8,
    "garbage": 8,
}
STREAM_FAULTS = {"ok": 50, "500": 10, "429": 10, "slow": 4, "cut0": 8, "truncated": 8}
ITEM = {
    "500": {"status": 500},
    "503": {"status": 503},
    "429": {"status": 429, "retry_after": "0"},  # come back at once: retried
    "slow": {"latency_ms": 900},  # past the provider's timeout
    "reset": {"cut": 0},  # plain: the connection closes with no answer
    "cut0": {"cut": 0},  # stream: closes before any event (retried)
    "truncated": {"cut": 3},  # stream: closes after the first events (bytes sent: not retried)
    "garbage": {"garbage": True},
}
# what the client sees when a fault is the last one (the SDK's classes by status)
LAST_FAULT_STATUS = {"500": 502, "503": 503, "429": 429, "slow": 504, "reset": 502, "cut0": 502}
LAST_FAULT_STATUS["garbage"] = 502


def faulty_config(upstream: UpstreamProcess) -> dict[str, Any]:
    """One provider with quick retries and a short timeout, one priced model."""
    return fake_upstream_config(
        upstream.url,
        providers=[
            provider(
                "faulty",
                upstream.base_url,
                max_retries=MAX_RETRIES,
                retry_backoff_s=0.001,
                timeout_s=TIMEOUT_S,
            )
        ],
        models=[
            {
                "name": "faulty-model",
                "targets": [
                    {
                        "provider": "faulty",
                        "upstream_model": "gpt-4o-mini",
                        "price": {"input": 1.0, "output": 2.0},
                    }
                ],
            }
        ],
    )


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("faults"), faulty_config(upstream)) as g:
        yield g


def post(gw: GatewayProcess, stream: bool) -> tuple[int, dict[str, str], bytes]:
    body = {
        "model": "faulty-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    req = urllib.request.Request(
        gw.base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TENANT_KEYS['acme']}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def schedule(rng: random.Random, weights: dict[str, int], n: int) -> list[str]:
    return rng.choices(list(weights), weights=list(weights.values()), k=n)


def item(fault: str, i: int) -> dict[str, Any]:
    # every good answer reports its own usage, so each cost is known exactly
    return {**ITEM.get(fault, {}), "usage": [100 + i, 10 + i, 0]}


def call_rows(gw: GatewayProcess, stream: bool) -> list[dict[str, Any]]:
    """The ledger's call rows (not the rows of failed attempts) of this model, oldest first."""
    return gw.ledger_rows(
        "model = ? AND stream = ? AND status != 'attempt_failed'", ("faulty-model", int(stream))
    )


def run_faults(
    gw: GatewayProcess, upstream: UpstreamProcess, *, stream: bool, requests: int, seed: int
) -> dict[str, int]:
    """Send ``requests`` one at a time over a seeded fault schedule, checking each as it comes
    back (``AssertionError`` on the first broken promise); what the outcomes were, counted."""
    upstream.reset()
    before = len(call_rows(gw, stream))
    rng = random.Random(seed)
    faults = schedule(rng, STREAM_FAULTS if stream else PLAIN_FAULTS, 10 * requests + 10)
    upstream.script(*(item(f, i) for i, f in enumerate(faults)))
    consumed = 0
    expected_pusd = 0
    seen = {"ok": 0, "error": 0, "upstream_cut": 0}
    for _ in range(requests):
        status, headers, raw = post(gw, stream)
        attempts = upstream.stats()["requests"] - consumed
        tried = faults[consumed : consumed + attempts]
        index = consumed
        consumed += attempts
        assert 1 <= attempts <= 1 + MAX_RETRIES, (attempts, tried)
        *failed, row = gw.ledger_rows("request_id = ?", (headers["x-request-id"],))
        assert row["attempt"] == attempts
        # every attempt before the last is a row of its own, at no cost (the upstream failed it)
        assert [(r["attempt"], r["status"]) for r in failed] == [
            (n, "attempt_failed") for n in range(1, attempts)
        ]
        assert all(r["cost_pusd"] == 0 for r in failed)
        last = tried[-1]
        if last in ("ok", "truncated"):
            assert status == 200
            # nothing after a good first byte is retried; every earlier attempt was a fault
            assert "ok" not in tried[:-1] and "truncated" not in tried[:-1]
        else:
            assert attempts == 1 + MAX_RETRIES, tried  # retryable faults: every retry was used
            assert status == LAST_FAULT_STATUS[last], (status, tried, raw)
            err = json.loads(raw)["error"]
            assert sorted(err) == ["code", "message", "param", "type"] and err["message"]
            if last == "429":
                assert headers.get("retry-after") == "0"  # the upstream's, passed on
            assert row["status"] == "error" and row["cost_pusd"] == 0
            seen["error"] += 1
            continue
        if last == "ok":
            p, c = 100 + index + attempts - 1, 10 + index + attempts - 1
            assert row["status"] == "ok"
            assert (row["input_tokens"], row["output_tokens"]) == (p, c)
            assert row["cost_pusd"] == (p * 1 + c * 2) * 10**6  # $1 / $2 per million, in pUSD
            expected_pusd += row["cost_pusd"]
            if stream:
                assert raw.rstrip().endswith(b"data: [DONE]")
            seen["ok"] += 1
        else:  # truncated after bytes were sent: an error event, an estimated row, never free
            assert raw.rstrip().split(b"\n")[-1].startswith(b'data: {"error"')
            assert row["status"] == "upstream_cut" and row["cost_pusd"] > 0
            assert row["usage_reported"] == 0
            seen["upstream_cut"] += 1
    rows = call_rows(gw, stream)[before:]
    assert len(rows) == requests  # one call row per request; retries are attempt rows
    assert expected_pusd == sum(r["cost_pusd"] for r in rows if r["status"] == "ok") > 0
    seen["attempts"] = consumed
    return seen


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_scripted_faults_bounded_attempts_clear_errors_exact_books(gw, upstream, stream) -> None:  # type: ignore[no-untyped-def]
    seen = run_faults(gw, upstream, stream=stream, requests=40, seed=6 if stream else 5)
    assert seen["ok"] and seen["error"], seen  # the schedule exercised both outcomes
