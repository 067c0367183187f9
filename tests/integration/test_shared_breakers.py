"""Two gateway replicas sharing Redis: what one learns of a provider's health, the other obeys.

A breaker opened by replica A's failed attempts keeps replica B's calls away from that provider,
and a rate limit's ``Retry-After`` seen by A cools the target for B too.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.fakes.gateway import GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.gateway import openai_provider as provider
from tests.fakes.upstream import UpstreamProcess

HI = [{"role": "user", "content": "hi"}]


def dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.fixture
def replicas(  # type: ignore[no-untyped-def]
    tmp_path, upstream: UpstreamProcess, redis_url: str
) -> Iterator[Callable[[], tuple[list[GatewayProcess], str]]]:
    started: list[GatewayProcess] = []

    def start() -> tuple[list[GatewayProcess], str]:
        tag = uuid.uuid4().hex[:8]  # provider names are the Redis keys: fresh ones per test
        url = upstream.base_url
        config = fake_upstream_config(
            upstream.url,
            redis=redis_url,
            providers=[
                provider(f"dead{tag}", dead_url(), max_retries=0, breaker_failures=2),
                provider(f"limited{tag}", url, max_retries=1, breaker_failures=1),
                provider(f"spare{tag}", url, max_retries=0),
            ],
            models=[
                {
                    "name": "dead-model",
                    "targets": [
                        {"provider": f"dead{tag}", "upstream_model": "gpt-4o-mini"},
                        {"provider": f"spare{tag}", "upstream_model": "gpt-4o-mini"},
                    ],
                },
                {
                    "name": "limited-model",
                    "targets": [
                        {"provider": f"limited{tag}", "upstream_model": "gpt-4o-mini"},
                        {"provider": f"spare{tag}", "upstream_model": "gpt-4o-mini"},
                    ],
                },
            ],
        )
        gws = [GatewayProcess(tmp_path / f"gw{i}", config) for i in range(2)]
        for gw in gws:
            gw.start()
            started.append(gw)
        return gws, tag

    yield start
    for gw in started:
        gw.stop()


def test_failures_seen_by_one_replica_open_the_breaker_for_the_other(
    replicas, fresh_upstream, sdk: Sdk
) -> None:  # type: ignore[no-untyped-def]
    (a, b), tag = replicas()
    for _ in range(2):  # refused twice on A (breaker_failures=2): A's fallback answers
        raw = sdk(a).chat.completions.with_raw_response.create(model="dead-model", messages=HI)
        assert raw.headers["x-passerelle-target"] == f"spare{tag}/gpt-4o-mini"
    # B never saw a failure of its own, yet skips the dead provider: one attempt, the fallback
    raw = sdk(b).chat.completions.with_raw_response.create(model="dead-model", messages=HI)
    assert raw.headers["x-passerelle-target"] == f"spare{tag}/gpt-4o-mini"
    [row] = b.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    assert row["attempt"] == 1


def test_a_retry_after_seen_by_one_replica_cools_the_target_for_the_other(
    replicas, fresh_upstream, sdk: Sdk
) -> None:  # type: ignore[no-untyped-def]
    (a, b), tag = replicas()
    fresh_upstream.script({"status": 429, "retry_after": "30"})
    raw = sdk(a).chat.completions.with_raw_response.create(model="limited-model", messages=HI)
    assert raw.headers["x-passerelle-target"] == f"spare{tag}/gpt-4o-mini"
    sent = fresh_upstream.stats()["requests"]
    raw = sdk(b).chat.completions.with_raw_response.create(model="limited-model", messages=HI)
    assert raw.headers["x-passerelle-target"] == f"spare{tag}/gpt-4o-mini"
    assert fresh_upstream.stats()["requests"] == sent + 1
