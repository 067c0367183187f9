"""Capabilities enforced through a real gateway: a call only reaches targets that can serve it.

The fake upstream is provider ``fake`` (OpenAI: embeddings, tools, json_schema) and provider
``claude`` (Anthropic: no embeddings, no logprobs). Embeddings for a model routed to claude
then fake are served by fake, never a 400 from claude; ``logprobs`` for a claude-only model is a
400 ``no_eligible_target`` naming the capability, the target and the model, with ``param``
``logprobs``, and nothing goes upstream. A tenant past its margin floor is degraded to a model routed to claude
then fake: the call's exclusions hold on the cheaper route (served by fake), and a cheaper route
with only claude refuses the call instead of serving it there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from openai import BadRequestError, OpenAI

from tests.fakes.gateway import GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

DEAR = "hello #usage:1000,2000,0"  # $0.30 on premium: past the $0.20 floor at once


def target(provider: str, model: str, usd: float) -> dict[str, Any]:
    return {"provider": provider, "upstream_model": model, "price": {"input": usd, "output": usd}}


MODELS = [
    {
        "name": "mixed-embed",
        "targets": [
            target("claude", "claude-embed", 0.1),
            target("fake", "text-embedding-3-small", 0.1),
        ],
    },
    {"name": "claude-only", "targets": [target("claude", "claude-haiku", 1)]},
    {"name": "premium", "degrade_to": "cheap-mixed", "targets": [target("fake", "premium-1", 100)]},
    {
        "name": "cheap-mixed",
        "targets": [target("claude", "cheap-claude", 1), target("fake", "cheap-1", 1)],
    },
    {"name": "premium-2", "degrade_to": "claude-only", "targets": [target("fake", "prem-2", 100)]},
]
PLANS = [
    {"name": "pro", "monthly_usd": 1, "margin_floor": {"max_cost_share": 0.2, "action": "degrade"}}
]
TENANTS = ("pro-a", "pro-b")


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    config = fake_upstream_config(upstream.url)
    config["providers"].append(
        {
            "name": "claude",
            "kind": "anthropic",
            "base_url": upstream.url,
            "api_key": "env:FAKE_UPSTREAM_KEY",
            "max_retries": 0,
            "breaker_failures": 1000,
            "timeout_s": 10,
        }
    )
    config["models"] += MODELS
    config["plans"] = PLANS
    keys, env = {}, {}
    for i, tenant in enumerate(TENANTS):
        keys[tenant] = env[f"PRO_KEY_{i}"] = f"sk-pro{i}-" + uuid.uuid4().hex
        config["tenants"].append({"name": tenant, "plan": "pro", "keys": [f"env:PRO_KEY_{i}"]})
    with GatewayProcess(tmp_path_factory.mktemp("eligible"), config, env=env) as g:
        yield g, keys


@pytest.fixture
def client(gw: tuple[GatewayProcess, dict[str, str]]) -> Iterator[OpenAI]:
    with OpenAI(base_url=gw[0].base_url, api_key=gw[1]["pro-a"], max_retries=0) as c:
        yield c


def test_embeddings_skip_the_anthropic_target(
    gw: tuple[GatewayProcess, dict[str, str]], fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    raw = client.embeddings.with_raw_response.create(model="mixed-embed", input="bonjour")
    assert raw.http_response.status_code == 200
    assert raw.headers["x-passerelle-target"] == "fake/text-embedding-3-small"
    assert len(raw.parse().data[0].embedding) == 8
    assert fresh_upstream.stats()["by_path"] == {"/v1/embeddings": 1}
    (row,) = gw[0].ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    assert (row["provider"], row["status"], row["attempt"]) == ("fake", "ok", 1)


def test_logprobs_on_a_model_only_anthropic_serves_is_a_400_naming_it(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(
            model="claude-only",
            messages=[{"role": "user", "content": "hi"}],
            logprobs=True,
        )
    err = refused.value
    assert (err.code, err.param) == ("no_eligible_target", "logprobs")
    assert "model 'claude-only'" in err.message
    assert "capability 'logprobs' removed claude/claude-haiku" in err.message
    assert fresh_upstream.stats()["requests"] == 0


def _ask(client: OpenAI, model: str) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": DEAR}],
        logprobs=True,
    )


def test_a_degraded_call_keeps_its_exclusions(
    gw: tuple[GatewayProcess, dict[str, str]], fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    first = _ask(client, "premium")
    assert first.headers["x-passerelle-target"] == "fake/premium-1"
    second = _ask(client, "premium")  # past the floor: degraded to cheap-mixed
    assert second.headers["x-passerelle-degraded"] == "margin-floor"
    assert second.headers["x-passerelle-target"] == "fake/cheap-1"  # claude was excluded
    assert fresh_upstream.stats()["by_path"] == {"/v1/chat/completions": 2}


def test_a_degraded_call_with_no_target_left_is_refused_not_sent_elsewhere(
    gw: tuple[GatewayProcess, dict[str, str]], fresh_upstream: UpstreamProcess
) -> None:
    with OpenAI(base_url=gw[0].base_url, api_key=gw[1]["pro-b"], max_retries=0) as client:
        assert _ask(client, "premium-2").headers["x-passerelle-target"] == "fake/prem-2"
        with pytest.raises(BadRequestError) as refused:
            _ask(client, "premium-2")  # degraded to claude-only, which logprobs excludes
    err = refused.value
    assert err.code == "no_eligible_target"
    assert "capability 'logprobs' removed claude/claude-haiku" in err.message
    assert fresh_upstream.stats()["requests"] == 1
