"""Chat completions through a real gateway process to the fake upstream, with the openai SDK."""

from __future__ import annotations

import json
import urllib.request
from decimal import Decimal

import pytest
from openai import OpenAI

from tests.fakes.gateway import ADMIN_TOKEN


def usage_rows(gateway, group_by: str = "tenant,feature,model") -> list[dict]:  # type: ignore[no-untyped-def]
    req = urllib.request.Request(
        f"{gateway.url}/admin/usage?group_by={group_by}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["data"]


def test_plain_answer_carries_cost_and_target_headers(client: OpenAI, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi #usage:1000,500,200"}],
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from fake upstream."
    assert answer.usage.prompt_tokens == 1000
    # 800 uncached × 0.15 + 200 cached × 0.075 + 500 × 0.60, per million
    assert Decimal(raw.headers["x-passerelle-cost-usd"]) == Decimal("0.000435")
    assert raw.headers["x-passerelle-target"] == "fake/gpt-4o-mini"
    assert raw.headers["x-request-id"].startswith("req_")


def test_stream_with_usage_reaches_the_sdk(client: OpenAI, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi #usage:10,4,0"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from fake upstream."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_stream_without_include_usage_hides_the_usage_chunk(client: OpenAI, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
    )
    assert all(c.choices for c in chunks)
    assert fresh_upstream.stats()["last_request"]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("feature_via", ["header", "metadata"])
def test_feature_is_metered_and_never_sent_upstream(
    gateway, fresh_upstream, sdk, feature_via
) -> None:  # type: ignore[no-untyped-def]
    feature = f"summarize-{feature_via}"
    client = sdk(gateway, "sk-test-globex")
    kwargs: dict = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x #usage:100,10,0"}],
    }
    if feature_via == "header":
        kwargs["extra_headers"] = {"X-Passerelle-Feature": feature}
    else:
        kwargs["metadata"] = {"feature": feature}
    client.chat.completions.create(**kwargs)
    assert "metadata" not in fresh_upstream.stats()["last_request"]
    rows = [r for r in usage_rows(gateway) if r["feature"] == feature]
    assert rows == [
        {
            "tenant": "globex",
            "feature": feature,
            "model": "gpt-4o-mini",
            "requests": 1,
            "input_tokens": 100,
            "output_tokens": 10,
            "cached_tokens": 0,
            "cost_usd": "0.000021000000",
            "unpriced_requests": 0,
            "errors": 0,
        }
    ]


def test_a_target_without_price_uses_the_dated_catalogue(client: OpenAI, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = client.chat.completions.with_raw_response.create(
        model="catalogued", messages=[{"role": "user", "content": "hi #usage:1000,100,400"}]
    )
    # gpt-4o list price: 600 × 2.50 + 400 × 1.25 (cached) + 100 × 10.00, per million
    assert Decimal(raw.headers["x-passerelle-cost-usd"]) == Decimal("0.003")
    assert raw.headers["x-passerelle-target"] == "fake/gpt-4o"


def test_a_target_with_no_known_price_is_unpriced_never_free(
    gateway, client, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    before = {r["model"]: r for r in usage_rows(gateway, "model")}.get("mystery")
    raw = client.chat.completions.with_raw_response.create(
        model="mystery", messages=[{"role": "user", "content": "hi #usage:10,5,0"}]
    )
    assert raw.headers["x-passerelle-unpriced"] == "true"
    assert "x-passerelle-cost-usd" not in raw.headers
    after = {r["model"]: r for r in usage_rows(gateway, "model")}["mystery"]
    assert after["unpriced_requests"] == (before["unpriced_requests"] if before else 0) + 1
    assert after["cost_usd"] == (before["cost_usd"] if before else "0.000000000000")


def test_embeddings_answer_through_the_sdk_and_are_metered(client: OpenAI, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = client.embeddings.with_raw_response.create(
        model="fake-embed", input=["first text", "second text"]
    )
    answer = raw.parse()
    assert len(answer.data) == 2 and len(answer.data[0].embedding) == 8
    tokens = answer.usage.prompt_tokens
    assert tokens > 0
    # text-embedding-3-small from the catalogue: $0.02 per million input tokens
    assert (
        Decimal(raw.headers["x-passerelle-cost-usd"]) == Decimal(tokens) * Decimal("0.02") / 10**6
    )


def test_models_lists_the_configured_model_names(client: OpenAI) -> None:
    names = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "catalogued", "mystery", "fake-embed"} <= names


def test_start_up_warns_about_targets_without_a_price(gateway) -> None:  # type: ignore[no-untyped-def]
    log = gateway.stderr()
    assert "no price known for fake/mystery-1" in log
    assert "fake/gpt-4o-mini" not in log.split("no price known for", 1)[1].split("\n", 1)[0]
