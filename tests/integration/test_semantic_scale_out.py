"""The semantic cache over two replicas sharing Redis: what one kept, the other serves.

Redis has no vector search here: each replica keeps its own index, fed from a stream of the
entries in Redis (``store/semantic_feed.py``). A paraphrase asked of the other replica is a hit
once the entry reached it; a replica started after the entry was kept loads it at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.gateway import GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess
from tests.integration.cache_helpers import ask, new_tenant, sse

HEADER = "x-passerelle-cache"
SEMANTIC = {"exact": {"ttl_s": 3600}, "semantic": {"models": ["gpt-4o-mini"]}}


def config(upstream: UpstreamProcess, postgres_url: str, redis_url: str) -> dict[str, Any]:
    return fake_upstream_config(upstream.url, cache=SEMANTIC, store=postgres_url, redis=redis_url)


@pytest.fixture(scope="module")
def replicas(
    upstream: UpstreamProcess,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    redis_url: str,
) -> Iterator[list[GatewayProcess]]:
    root = tmp_path_factory.mktemp("semantic-replicas")
    gws = [
        GatewayProcess(root / f"gw{i}", config(upstream, postgres_url, redis_url)) for i in range(2)
    ]
    for gw in gws:
        gw.start()
    yield gws
    for gw in gws:
        gw.stop()


def eventually_hit(client: Any, prompt: str) -> Any:
    """The feed is read within half a second; ask until the entry has reached the replica."""
    deadline = time.monotonic() + 5
    while True:
        resp = ask(client, prompt, extra_headers={"Cache-Control": "no-store"})
        if resp.headers[HEADER] == "hit" or time.monotonic() > deadline:
            return resp
        time.sleep(0.1)


def test_a_paraphrase_asked_of_the_other_replica_is_a_hit(
    replicas: list[GatewayProcess], fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    one, other = replicas
    _, key = new_tenant(one, "semantic")
    fresh_upstream.script({"reply": "Use the reset link"})
    first = ask(sdk(one, key), "How do I reset my password?")
    assert first.headers[HEADER] == "miss"
    second = eventually_hit(sdk(other, key), "How can I reset my password?")
    assert second.headers[HEADER] == "hit"
    assert second.headers["x-passerelle-cache-match"] == "semantic"
    assert second.content == first.content
    headers, events = sse(
        other, key, {"messages": [{"role": "user", "content": "How can I reset my password ?"}]}
    )
    assert headers[HEADER] == "hit" and events[-1] == "[DONE]"
    assert fresh_upstream.stats()["requests"] == 1
    # another tenant on either replica: never the first tenant's answer
    _, key_b = new_tenant(other, "semantic")
    assert ask(sdk(other, key_b), "How can I reset my password?").headers[HEADER] == "miss"


def test_a_replica_started_later_loads_the_entries_kept_before(
    replicas: list[GatewayProcess],
    fresh_upstream: UpstreamProcess,
    sdk: Sdk,
    upstream: UpstreamProcess,
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    one, _ = replicas
    _, key = new_tenant(one, "semantic")
    ask(sdk(one, key), "What is the boiling point of water at sea level?")
    with GatewayProcess(tmp_path / "late", config(upstream, postgres_url, redis_url)) as late:
        resp = ask(sdk(late, key), "What's the boiling point of water at sea level?")
        assert resp.headers[HEADER] == "hit"
    assert fresh_upstream.stats()["requests"] == 1
