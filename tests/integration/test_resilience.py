"""Retries, fallback, the circuit breaker, and routing no client can redirect.

A real gateway in front of the fake upstream, scripted per request through ``/_control/script``;
the upstream's own request counter is the witness of what the gateway sent, and the SQLite ledger
of what it recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.gateway import openai_provider as provider
from tests.fakes.upstream import UpstreamProcess

COOLDOWN_S = 0.5
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    url = upstream.base_url
    config = fake_upstream_config(
        upstream.url,
        providers=[
            provider("fake", url),
            provider("primary", url, max_retries=0),
            provider("secondary", url, max_retries=0),
            provider(
                "flaky", url, max_retries=0, breaker_failures=2, breaker_cooldown_s=COOLDOWN_S
            ),
            provider(
                "flaky2", url, max_retries=0, breaker_failures=2, breaker_cooldown_s=COOLDOWN_S
            ),
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
            {"name": "flaky2-model", "targets": [{"provider": "flaky2"}]},
        ],
    )
    with GatewayProcess(tmp_path_factory.mktemp("resilience"), config) as g:
        yield g


@pytest.fixture
def client(gw: GatewayProcess, sdk: Sdk) -> OpenAI:
    return sdk(gw)


def test_retries_with_backoff_until_the_upstream_recovers(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 503}, {"status": 503}, {})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert raw.parse().choices[0].message.content == "Hello from fake upstream."
    assert fresh_upstream.stats()["requests"] == 3
    rows = gw.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    # each failed attempt is a row of its own (the upstream may bill it); the call is the last
    assert [(r["attempt"], r["status"], r["error_code"], r["provider"]) for r in rows] == [
        (1, "attempt_failed", "upstream_http_503", "fake"),
        (2, "attempt_failed", "upstream_http_503", "fake"),
        (3, "ok", None, "fake"),
    ]


def test_retries_stop_at_max_retries(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script(*[{"status": 503}] * 4)
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


def test_circuit_breaker_opens_then_lets_a_trial_through_after_cooldown(
    gw, fresh_upstream, client
) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 503}, {"status": 503})
    for _ in range(2):  # breaker_failures=2 consecutive failures open it
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="flaky-model", messages=HI)
    assert fresh_upstream.stats()["requests"] == 2
    opened = time.monotonic()

    # open: refused at the gateway, nothing sent upstream
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="flaky-model", messages=HI)
        assert info.value.code == "providers_unavailable"
    assert time.monotonic() - opened < COOLDOWN_S, "the checks above outlasted the cooldown"
    assert fresh_upstream.stats()["requests"] == 2

    # half-open after the cooldown: one trial goes through; its success closes the breaker
    time.sleep(COOLDOWN_S + 0.1)
    answer = client.chat.completions.create(model="flaky-model", messages=HI)
    assert answer.choices[0].message.content == "Hello from fake upstream."
    client.chat.completions.create(model="flaky-model", messages=HI)
    assert fresh_upstream.stats()["requests"] == 4


def test_failed_trial_reopens_the_circuit_breaker(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 503}, {"status": 503}, {"status": 503})
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="flaky2-model", messages=HI)
    time.sleep(COOLDOWN_S + 0.1)
    with pytest.raises(openai.InternalServerError) as info:  # the trial, failing
        client.chat.completions.create(model="flaky2-model", messages=HI)
    assert info.value.code == "upstream_error"
    with pytest.raises(openai.InternalServerError) as info:  # open again at once
        client.chat.completions.create(model="flaky2-model", messages=HI)
    assert info.value.code == "providers_unavailable"
    assert fresh_upstream.stats()["requests"] == 3
    time.sleep(COOLDOWN_S + 0.1)
    client.chat.completions.create(model="flaky2-model", messages=HI)  # and closes on success
    assert fresh_upstream.stats()["requests"] == 4


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
