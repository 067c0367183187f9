"""Attacks on the exact cache's key, through a real gateway: what must never share an entry.

Two requests that differ in one field that may change the answer must both go upstream; one
tenant's entry is never served to another; a Messages API or Responses API call has entries of
its own and is served from them in its own dialect; a tenant at the end of its budget is still
answered from the cache, since a hit reserves nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest
from openai import OpenAI, RateLimitError

from tests.fakes.gateway import GatewayProcess, Sdk
from tests.fakes.upstream import UpstreamProcess
from tests.integration.cache_helpers import admin_get, ask, cache_config, new_tenant, rows, unique

HEADER = "x-passerelle-cache"
CAPPED_KEY = "sk-test-capped"
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = cache_config(upstream.url)
    config["tenants"].append(
        {"name": "capped", "keys": ["env:CAPPED_KEY"], "budgets": [{"usd": 0.003, "period": "day"}]}
    )
    workdir = tmp_path_factory.mktemp("cache-keys")
    with GatewayProcess(workdir, config, env={"CAPPED_KEY": CAPPED_KEY}) as g:
        yield g


def post(gw: GatewayProcess, key: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A chat call sent as raw JSON (any field, known to the SDK or not): its cache header and
    its answer."""
    resp = httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "temperature": 0, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return resp.headers[HEADER], resp.json()


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


# (base, variant): the variant differs from the base in one field only
VARIANTS = {
    "tools": ({}, {"tools": [WEATHER]}),
    "tool_choice": ({"tools": [WEATHER]}, {"tools": [WEATHER], "tool_choice": "none"}),
    "parallel_tool_calls": (
        {"tools": [WEATHER]},
        {"tools": [WEATHER], "parallel_tool_calls": False},
    ),
    "response_format": ({}, {"response_format": {"type": "json_object"}}),
    "top_p": ({}, {"top_p": 0.5}),
    "seed": ({"seed": 1}, {"seed": 2}),
    "max_tokens": ({"max_tokens": 50}, {"max_tokens": 51}),
    "max_completion_tokens": ({}, {"max_completion_tokens": 50}),
    "stop": ({}, {"stop": ["\n"]}),
    "n": ({}, {"n": 2}),
    "logit_bias": ({}, {"logit_bias": {"50256": -100}}),
    "presence_penalty": ({}, {"presence_penalty": 0.5}),
    "frequency_penalty": ({}, {"frequency_penalty": 0.5}),
    "logprobs": ({}, {"logprobs": True}),
    "top_logprobs": ({"logprobs": True}, {"logprobs": True, "top_logprobs": 3}),
    "reasoning_effort": ({}, {"reasoning_effort": "low"}),
    "service_tier": ({}, {"service_tier": "flex"}),
    "store": ({}, {"store": True}),
    "prediction": ({}, {"prediction": {"type": "content", "content": "Paris"}}),
    "modalities": ({}, {"modalities": ["text"]}),
    "provider extra top_k": ({}, {"top_k": 40}),
    "provider extra num_ctx": ({}, {"num_ctx": 4096}),
    "a field no release knows yet": ({}, {"verbosity": "low"}),
    "model": ({}, {"model": "catalogued"}),
    "system prompt": ({}, {"system": [{"role": "system", "content": "Answer in French."}]}),
    "an earlier turn": ({}, {"before": [user("hi"), {"role": "assistant", "content": "hello"}]}),
    "message name": ({}, {"name": "bob"}),
    "content as parts": ({}, {"parts": True}),
}


def body_of(prompt: str, extra: dict[str, Any]) -> dict[str, Any]:
    extra = dict(extra)
    message: dict[str, Any] = user(prompt)
    if extra.pop("name", None):
        message["name"] = "bob"
    if extra.pop("parts", None):
        message["content"] = [{"type": "text", "text": prompt}]
    messages = [*extra.pop("system", []), *extra.pop("before", []), message]
    return {"messages": messages, **extra}


@pytest.mark.parametrize("field", sorted(VARIANTS))
def test_requests_that_differ_in_one_field_never_share_an_entry(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, field: str
) -> None:
    _, key = new_tenant(gw)
    base, variant = VARIANTS[field]
    prompt = unique()
    assert post(gw, key, body_of(prompt, base))[0] == "miss"
    assert post(gw, key, body_of(prompt, variant))[0] == "miss"
    assert fresh_upstream.stats()["requests"] == 2
    # both were kept, each under its own key
    assert post(gw, key, body_of(prompt, base))[0] == "hit"
    assert post(gw, key, body_of(prompt, variant))[0] == "hit"
    assert fresh_upstream.stats()["requests"] == 2


@pytest.mark.parametrize(
    "field",
    [
        pytest.param({"user": "end-user-2"}, id="user"),
        pytest.param({"metadata": {"trace": "t-2"}}, id="metadata"),
        pytest.param({"stream_options": {"include_usage": True}, "stream": True}, id="stream"),
    ],
)
def test_fields_that_do_not_change_the_answer_share_the_entry(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, field: dict[str, Any]
) -> None:
    _, key = new_tenant(gw)
    prompt = unique()
    post(gw, key, {"messages": [user(prompt)], "user": "end-user-1", "metadata": {"trace": "t-1"}})
    resp = httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "temperature": 0, "messages": [user(prompt)], **field},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert resp.headers[HEADER] == "hit" and fresh_upstream.stats()["requests"] == 1


def test_one_tenants_entry_is_never_served_to_another(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    (a, key_a), (b, key_b) = new_tenant(gw), new_tenant(gw)
    alice, bob = sdk(gw, key_a), sdk(gw, key_b)
    prompt = unique("what is my account balance?")
    fresh_upstream.script({"reply": "alice has 1000 dollars"})
    assert ask(alice, prompt).parse().choices[0].message.content == "alice has 1000 dollars"
    theirs = ask(bob, prompt)  # the very same body, another tenant
    assert theirs.headers[HEADER] == "miss"
    assert "alice" not in theirs.parse().choices[0].message.content
    assert fresh_upstream.stats()["requests"] == 2
    assert "alice" in ask(alice, prompt).parse().choices[0].message.content
    assert "alice" not in ask(bob, prompt).parse().choices[0].message.content
    assert fresh_upstream.stats()["requests"] == 2  # each answered from its own entry
    assert [r["cache"] for r in rows(gw, b)] == ["miss", "hit"]
    assert [r["cache"] for r in rows(gw, a)] == ["miss", "hit"]


def test_a_messages_api_call_is_answered_from_its_own_entries_in_its_dialect(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    name, key = new_tenant(gw)
    client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    prompt = unique("bonjour")
    ask_it = {
        "model": "gpt-4o-mini",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": prompt}],
        "extra_body": {"temperature": 0},  # this SDK no longer names it; the API still takes it
    }
    fresh_upstream.script({"reply": "Salut toi"})
    first = client.messages.with_raw_response.create(**ask_it)  # type: ignore[arg-type]
    second = client.messages.with_raw_response.create(**ask_it)  # type: ignore[arg-type]
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    message = second.parse()
    assert message.content[0].text == "Salut toi"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.type == "message"
    with client.messages.stream(**ask_it) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Salut toi" and final.stop_reason == "end_turn"
    assert fresh_upstream.stats()["requests"] == 1
    # the same conversation asked as a chat completion is another endpoint: its own entry
    chat = httpx.post(
        f"{gw.base_url}/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "max_tokens": 100,
            "temperature": 0,
            "messages": [user(prompt)],
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert chat.headers[HEADER] == "miss" and fresh_upstream.stats()["requests"] == 2
    assert [r["cache"] for r in rows(gw, name)] == ["miss", "hit", "hit", "miss"]
    client.close()


def test_a_responses_api_call_is_a_hit_with_a_response_of_its_own(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    _, key = new_tenant(gw)
    client = sdk(gw, key)
    prompt = unique("name a colour")
    fresh_upstream.script({"reply": "blue"})
    first = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input=prompt, temperature=0
    )
    second = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input=prompt, temperature=0
    )
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    one, two = first.parse(), second.parse()
    assert one.output_text == two.output_text == "blue" and one.id != two.id
    follow = client.responses.create(
        model="gpt-4o-mini", input="and another?", previous_response_id=two.id, temperature=0
    )
    assert follow.output_text  # the hit was kept as a response that can be continued
    assert fresh_upstream.stats()["requests"] == 2


def test_a_tenant_at_its_budgets_end_is_still_answered_from_the_cache(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    client: OpenAI = sdk(gw, CAPPED_KEY)
    # 20,000 in, 50 out: $0.00303, past the $0.003 budget once answered
    paid = f"#usage:20000,50,0 the dear question {uuid.uuid4().hex[:8]}"
    ask(client, paid)
    with pytest.raises(RateLimitError) as refused:
        ask(client, unique("a new question"))
    assert refused.value.body["code"] == "insufficient_quota"  # type: ignore[index]
    again = ask(client, paid)
    assert again.headers[HEADER] == "hit" and again.headers["x-passerelle-cost-usd"] == "0"
    assert fresh_upstream.stats()["requests"] == 1
    miss, hit = [r for r in rows(gw, "capped") if r["status"] == "ok"]
    assert miss["cost_pusd"] == 3_030_000_000 and hit["cost_pusd"] == 0
    assert hit["saved_pusd"] == 3_030_000_000
    spent = admin_get(gw, "/admin/usage?group_by=tenant")["data"]
    assert [Decimal(r["cost_usd"]) for r in spent if r["tenant"] == "capped"] == [
        Decimal("0.00303")  # the budget's counter was charged once, for the call that was paid
    ]


@pytest.fixture(scope="module")
def sampled_gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway whose policy caches sampled calls too, and keeps entries per end user."""
    config = cache_config(upstream.url)
    config["cache"] = {"exact": {"ttl_s": 3600, "allow_sampled": True, "per_user": True}}
    with GatewayProcess(tmp_path_factory.mktemp("cache-sampled"), config) as g:
        yield g


def test_where_policy_allows_sampled_calls_the_temperature_is_in_the_key(
    sampled_gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    _, key = new_tenant(sampled_gw)
    prompt = unique()
    plain = {"messages": [user(prompt)], "user": "u1"}
    headers = []
    for body in [plain, plain, {**plain, "temperature": 0.5}, {**plain, "temperature": 0.7}]:
        resp = httpx.post(
            f"{sampled_gw.base_url}/chat/completions",
            json={"model": "gpt-4o-mini", **body},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        headers.append(resp.headers[HEADER])
    assert headers == ["miss", "hit", "miss", "miss"]
    assert fresh_upstream.stats()["requests"] == 3


def test_per_user_entries_are_never_served_to_another_user_of_the_tenant(
    sampled_gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    _, key = new_tenant(sampled_gw)
    prompt = unique("my orders?")
    got = [
        post(sampled_gw, key, {"messages": [user(prompt)], "user": who})[0]
        for who in ("u1", "u2", "u1", "u2")
    ]
    assert got == ["miss", "miss", "hit", "hit"]
    assert fresh_upstream.stats()["requests"] == 2


@pytest.fixture(scope="module")
def classes_gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """The cache on behind a data-class policy: `mixed` has a US target first and an EU one;
    `confidential` calls may reach only the EU."""
    config = cache_config(upstream.url)
    fake = config["providers"][0]
    config["providers"] = [
        {**fake, "name": "us", "jurisdiction": "US"},
        {**fake, "name": "eu", "jurisdiction": "EU"},
    ]
    price = {"input": 1, "output": 1}
    config["models"] = [
        {
            "name": "mixed",
            "targets": [
                {"provider": "us", "upstream_model": "us-1", "price": price},
                {"provider": "eu", "upstream_model": "eu-1", "price": price},
            ],
        }
    ]
    config["sovereignty"] = {
        "default_class": "internal",
        "classes": {"internal": {"allow": ["any"]}, "confidential": {"allow": ["EU"]}},
    }
    with GatewayProcess(tmp_path_factory.mktemp("cache-classes"), config) as g:
        yield g


def test_an_answer_a_provider_outside_a_calls_class_gave_is_never_served_to_it(
    classes_gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    _, key = new_tenant(classes_gw)
    body = {"model": "mixed", "messages": [user(unique())]}

    def send(**headers: str) -> httpx.Response:
        return httpx.post(
            f"{classes_gw.base_url}/chat/completions",
            json={"temperature": 0, **body},
            headers={"Authorization": f"Bearer {key}", **headers},
            timeout=30,
        )

    first = send()  # internal: answered by the US target
    assert first.headers["x-passerelle-target"] == "us/us-1"
    confidential = send(**{"X-Passerelle-Data-Class": "confidential"})
    assert confidential.headers[HEADER] == "miss"
    assert confidential.headers["x-passerelle-target"] == "eu/eu-1"
    assert fresh_upstream.stats()["models"] == {"us-1": 1, "eu-1": 1}
    # each class is then served from its own entry
    assert send().headers[HEADER] == "hit"
    again = send(**{"X-Passerelle-Data-Class": "confidential"})
    assert again.headers[HEADER] == "hit" and again.headers["x-passerelle-target"] == "eu/eu-1"
