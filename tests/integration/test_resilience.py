"""Retries, fallback, the circuit breaker, and routing no client can redirect.

A real gateway in front of the fake upstream, scripted per request through ``/_control/script``;
the upstream's own request counter is the witness of what the gateway sent, and the SQLite ledger
of what it recorded.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.gateway import openai_provider as provider
from tests.fakes.upstream import UpstreamProcess

COOLDOWN_S = 60.0  # far longer than the test: waiting it out is tests/unit/test_dispatch_health.py
HI = [{"role": "user", "content": "hi"}]
PRICE = {"input": 1.0, "output": 2.0}
DEARER = {"input": 1.5, "output": 3.0}  # the fallback, at 1.5x


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    url = upstream.base_url
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    config = fake_upstream_config(
        upstream.url,
        providers=[
            provider("fake", url),
            provider("primary", url, max_retries=0),
            provider("secondary", url, max_retries=0),
            provider(
                "flaky", url, max_retries=0, breaker_failures=2, breaker_cooldown_s=COOLDOWN_S
            ),
            provider("main", url, max_retries=1, breaker_failures=5, breaker_cooldown_s=60),
            provider("backup", url, max_retries=0, breaker_failures=5, breaker_cooldown_s=60),
            provider("main2", url, max_retries=1, breaker_failures=2, breaker_cooldown_s=60),
            provider("dead", dead, max_retries=0, breaker_failures=2, breaker_cooldown_s=60),
            provider("limited", url, max_retries=1, breaker_failures=1, breaker_cooldown_s=60),
            provider("spare", url, max_retries=0),
            provider("solo", url, max_retries=1, breaker_failures=1, breaker_cooldown_s=60),
        ],
        models=[
            {"name": "gpt-4o-mini", "targets": [{"provider": "fake"}]},
            {
                "name": "fallback-model",
                "targets": [
                    {"provider": "primary", "upstream_model": "gpt-4o-mini"},
                    {"provider": "secondary", "upstream_model": "gpt-4o-mini"},
                ],
            },
            {"name": "flaky-model", "targets": [{"provider": "flaky"}]},
            {
                "name": "shared-model",
                "targets": [
                    {"provider": "main", "upstream_model": "gpt-4o-mini", "price": PRICE},
                    {"provider": "backup", "upstream_model": "gpt-4o-mini", "price": DEARER},
                ],
            },
            {
                "name": "dead-model",
                "targets": [
                    {"provider": "dead", "upstream_model": "gpt-4o-mini"},
                    {"provider": "secondary", "upstream_model": "gpt-4o-mini"},
                ],
            },
            {
                "name": "pressed-model",
                "targets": [
                    {"provider": "main2", "upstream_model": "gpt-4o-mini", "price": PRICE},
                    {"provider": "backup", "upstream_model": "gpt-4o-mini", "price": DEARER},
                ],
            },
            {
                "name": "limited-model",
                "targets": [
                    {"provider": "limited", "upstream_model": "gpt-4o-mini"},
                    {"provider": "spare", "upstream_model": "gpt-4o-mini"},
                ],
            },
            {"name": "solo-model", "targets": [{"provider": "solo", "upstream_model": "m"}]},
        ],
    )
    with GatewayProcess(tmp_path_factory.mktemp("resilience"), config) as g:
        yield g


@pytest.fixture
def client(gw: GatewayProcess, sdk: Sdk) -> OpenAI:
    return sdk(gw)


def test_retries_with_backoff_until_the_upstream_recovers(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 500}, {"status": 502}, {})  # 5xx that set no Retry-After
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert raw.parse().choices[0].message.content == "Hello from fake upstream."
    assert fresh_upstream.stats()["requests"] == 3
    rows = gw.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    # each failed attempt is a row of its own (the upstream may bill it); the call is the last
    assert [(r["attempt"], r["status"], r["error_code"], r["provider"]) for r in rows] == [
        (1, "attempt_failed", "upstream_http_500", "fake"),
        (2, "attempt_failed", "upstream_http_502", "fake"),
        (3, "ok", None, "fake"),
    ]


def test_retries_stop_at_max_retries(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script(*[{"status": 500}] * 4)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert fresh_upstream.stats()["requests"] == 3
    assert info.value.request_id is not None
    *attempts, row = gw.ledger_rows("request_id = ?", (info.value.request_id,))
    assert (row["attempt"], row["status"], row["error_code"]) == (3, "error", "upstream_error")
    assert row["input_tokens"] == row["output_tokens"] == 0
    assert [(a["attempt"], a["status"]) for a in attempts] == [
        (1, "attempt_failed"),
        (2, "attempt_failed"),
    ]


def test_fallback_answers_from_the_second_target(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 503})
    raw = client.chat.completions.with_raw_response.create(model="fallback-model", messages=HI)
    assert raw.parse().choices[0].message.content == "Hello from fake upstream."
    assert raw.headers["x-passerelle-target"] == "secondary/gpt-4o-mini"
    assert fresh_upstream.stats()["requests"] == 2
    first, row = gw.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    assert (first["provider"], first["attempt"], first["status"]) == (
        "primary",
        1,
        "attempt_failed",
    )
    assert (row["provider"], row["attempt"], row["status"]) == ("secondary", 2, "ok")


def test_client_error_from_upstream_is_not_retried_nor_sent_to_the_fallback(
    gw, fresh_upstream, client
) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 400})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fallback-model", messages=HI)
    assert fresh_upstream.stats()["requests"] == 1


def test_an_open_circuit_breaker_answers_503_at_the_gateway_with_its_retry_after(
    gw, fresh_upstream, client
) -> None:  # type: ignore[no-untyped-def]
    """Open, end to end; the cooldown, the trial and a failed trial run on a hand-held clock in
    tests/unit/test_dispatch_health.py."""
    fresh_upstream.script({"status": 500}, {"status": 500})
    for _ in range(2):  # breaker_failures=2 consecutive failures open it
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="flaky-model", messages=HI)
    assert fresh_upstream.stats()["requests"] == 2

    # open: refused at the gateway, nothing sent upstream; a 503 that says when to come back
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="flaky-model", messages=HI)
        assert info.value.code == "providers_unavailable"
        assert info.value.status_code == 503
        assert 1 <= int(info.value.response.headers["retry-after"]) <= COOLDOWN_S
    assert fresh_upstream.stats()["requests"] == 2


def test_request_fields_and_headers_cannot_redirect_the_gateway(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    with UpstreamProcess() as decoy:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=HI,
            extra_body={
                "base_url": decoy.base_url,
                "api_base": decoy.base_url,
                "provider": {"base_url": decoy.base_url},
                "api_key": "sk-attacker",
            },
            extra_headers={
                "X-Base-Url": decoy.base_url,
                "X-Api-Base": decoy.base_url,
                "X-Forwarded-Host": f"127.0.0.1:{decoy.port}",
                "X-Passerelle-Target": "decoy/gpt-4o-mini",
            },
        )
        assert raw.headers["x-passerelle-target"] == "fake/gpt-4o-mini"
        assert decoy.stats()["requests"] == 0
    stats = fresh_upstream.stats()
    assert stats["requests"] == 1
    # the upstream sees the gateway's credentials, never the client's key or headers
    headers = stats["last_headers"]
    assert headers["authorization"] == "Bearer sk-upstream-secret"
    assert not {"x-base-url", "x-api-base", "x-forwarded-host", "x-passerelle-target"} & set(
        headers
    )
    assert TENANT_KEYS["acme"] not in str(headers)


def _served_by_main_at_its_price(
    client: OpenAI, fresh_upstream: UpstreamProcess, model: str = "shared-model"
) -> None:
    before = fresh_upstream.stats()["requests"]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HI)
    main = "main" if model == "shared-model" else "main2"
    assert raw.headers["x-passerelle-target"] == f"{main}/gpt-4o-mini"
    usage = raw.parse().usage
    assert usage is not None
    cost = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6
    assert float(raw.headers["x-passerelle-cost-usd"]) == pytest.approx(cost)
    assert fresh_upstream.stats()["requests"] == before + 1


def test_one_tenants_poison_requests_do_not_open_the_breaker_for_other_tenants(
    gw, fresh_upstream, sdk
) -> None:  # type: ignore[no-untyped-def]
    mallory, globex = sdk(gw, TENANT_KEYS["acme"]), sdk(gw, TENANT_KEYS["globex"])
    poison = [{"role": "user", "content": "make it fail #status:500"}]
    for _ in range(10):
        with pytest.raises(openai.APIError):
            mallory.chat.completions.create(model="shared-model", messages=poison)
    # the poisoned tenant was cut off from `main` (its own breaker), so its attempts stopped
    sent = fresh_upstream.stats()["requests"]
    assert sent < 10 * 3, sent
    for _ in range(5):
        _served_by_main_at_its_price(globex, fresh_upstream)


def test_rate_limits_and_overload_with_retry_after_never_open_the_breaker(
    gw, fresh_upstream, sdk
) -> None:  # type: ignore[no-untyped-def]
    acme, globex = sdk(gw, TENANT_KEYS["acme"]), sdk(gw, TENANT_KEYS["globex"])
    for status in (429, 503):  # with a Retry-After of 0: nothing cools, every attempt is made
        for c in (acme, globex, acme, globex, acme, globex, acme, globex):
            busy = {"status": status, "retry_after": "0"}
            fresh_upstream.script(busy, busy, busy)
            with pytest.raises(openai.APIError):
                c.chat.completions.create(model="pressed-model", messages=HI)
            fresh_upstream.reset()
    _served_by_main_at_its_price(acme, fresh_upstream, "pressed-model")
    _served_by_main_at_its_price(globex, fresh_upstream, "pressed-model")


def test_an_unreachable_provider_is_skipped_for_every_tenant(gw, fresh_upstream, sdk) -> None:  # type: ignore[no-untyped-def]
    acme, globex = sdk(gw, TENANT_KEYS["acme"]), sdk(gw, TENANT_KEYS["globex"])
    for _ in range(2):  # refused twice (breaker_failures=2): the fallback answers
        raw = acme.chat.completions.with_raw_response.create(model="dead-model", messages=HI)
        assert raw.headers["x-passerelle-target"] == "secondary/gpt-4o-mini"
        rows = gw.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
        assert [(r["attempt"], r["status"]) for r in rows] == [(1, "attempt_failed"), (2, "ok")]
    # a refused connection is the provider's health, not acme's content: globex skips it too
    raw = globex.chat.completions.with_raw_response.create(model="dead-model", messages=HI)
    assert raw.headers["x-passerelle-target"] == "secondary/gpt-4o-mini"
    [row] = gw.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    assert row["attempt"] == 1


def test_a_rate_limit_cools_its_target_and_the_call_falls_back_at_once(
    gw, fresh_upstream, client
) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 429, "retry_after": "2"})
    raw = client.chat.completions.with_raw_response.create(model="limited-model", messages=HI)
    # no retry against a target that said "not before 2 s": the fallback answers
    assert raw.headers["x-passerelle-target"] == "spare/gpt-4o-mini"
    assert fresh_upstream.stats()["requests"] == 2
    raw = client.chat.completions.with_raw_response.create(model="limited-model", messages=HI)
    assert raw.headers["x-passerelle-target"] == "spare/gpt-4o-mini"  # still cooling: untouched
    assert fresh_upstream.stats()["requests"] == 3
    # that the target is tried again once its Retry-After is over, and that no breaker opened
    # (breaker_failures=1), is tests/unit/test_dispatch_health.py, on a hand-held clock


def test_a_single_rate_limited_target_answers_503_with_the_time_to_come_back(
    gw, fresh_upstream, client
) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 429, "retry_after": "2"})
    with pytest.raises(openai.RateLimitError) as limited:  # the upstream's own 429, passed on
        client.chat.completions.create(model="solo-model", messages=HI)
    assert limited.value.response.headers["retry-after"] == "2"
    assert fresh_upstream.stats()["requests"] == 1  # no retry before its Retry-After
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="solo-model", messages=HI)
    assert (info.value.status_code, info.value.code) == (503, "providers_unavailable")
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 2
    assert fresh_upstream.stats()["requests"] == 1
