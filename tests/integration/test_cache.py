"""The exact cache through a real gateway: the same request answered again for nothing.

One gateway with ``cache: {exact: {ttl_s: 3600}}`` for the module, in front of the fake upstream,
whose request counter proves what was and was not sent upstream. Streams are replayed event by
event, plain and streamed requests are served from each other's entries, ``Cache-Control`` is
honoured, only complete successful answers are kept, and a hit is a ledger row at cost 0 with
the saving it made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.fakes.gateway import GatewayProcess, Sdk
from tests.fakes.upstream import UpstreamProcess
from tests.integration.cache_helpers import (
    ONE_CALL_PUSD,
    ask,
    cache_config,
    new_tenant,
    rows,
    sse,
    unique,
)

HEADER = "x-passerelle-cache"


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("cache"), cache_config(upstream.url)) as g:
        yield g


@pytest.fixture
def tenant(gw: GatewayProcess) -> tuple[str, str]:
    return new_tenant(gw)


def test_the_same_request_again_is_a_hit_at_cost_0_that_saved_the_first_call(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, tenant: tuple[str, str]
) -> None:
    name, key = tenant
    client = sdk(gw, key)
    prompt = unique()
    fresh_upstream.script({"reply": "Paris, said once"})
    first = ask(client, prompt)
    second = ask(client, prompt)
    assert first.headers[HEADER] == "miss" and second.headers[HEADER] == "hit"
    assert fresh_upstream.stats()["requests"] == 1
    assert second.parse().choices[0].message.content == "Paris, said once"
    assert second.content == first.content  # the stored answer, byte for byte
    assert second.headers["x-passerelle-target"] == first.headers["x-passerelle-target"]
    assert Decimal(first.headers["x-passerelle-cost-usd"]) == Decimal(ONE_CALL_PUSD) / 10**12
    assert second.headers["x-passerelle-cost-usd"] == "0"
    assert second.headers["x-passerelle-cached-from"] == first.headers["x-request-id"]

    miss, hit = rows(gw, name)
    assert (miss["cache"], miss["cost_pusd"], miss["saved_pusd"]) == ("miss", ONE_CALL_PUSD, 0)
    assert miss["provider"] == "fake" and miss["saving_source"] is None
    assert (hit["cache"], hit["status"], hit["cost_pusd"]) == ("hit", "ok", 0)
    assert hit["saved_pusd"] == ONE_CALL_PUSD and hit["saving_source"] == "cache_exact"
    assert (hit["input_tokens"], hit["output_tokens"], hit["provider"]) == (0, 0, None)
    assert hit["model"] == "gpt-4o-mini"


def test_a_stored_stream_is_replayed_as_a_stream_event_by_event(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, tenant: tuple[str, str]
) -> None:
    name, key = tenant
    body = {"messages": [{"role": "user", "content": unique("#words:12 count")}]}
    h1, first = sse(gw, key, body)
    h2, again = sse(gw, key, body)
    assert (h1[HEADER], h2[HEADER]) == ("miss", "hit")
    assert fresh_upstream.stats()["requests"] == 1
    assert again == first  # every event as it was sent, in order, [DONE] last
    assert len(first) == 14 and first[-1] == "[DONE]"  # role, 12 words (the last ends), [DONE]
    # the client that asks for the usage chunk gets it, from the same entry
    _, with_usage = sse(gw, key, {**body, "stream_options": {"include_usage": True}})
    assert with_usage[:-2] == first[:-1] and fresh_upstream.stats()["requests"] == 1
    usage = json.loads(with_usage[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 20
    assert [r["cache"] for r in rows(gw, name)] == ["miss", "hit", "hit"]
    assert [r["stream"] for r in rows(gw, name)] == [1, 1, 1]


def test_a_plain_request_is_served_from_a_stored_stream(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    client = sdk(gw, key)
    prompt = unique("#words:7 a stream first")
    streamed = client.chat.completions.create(
        model="gpt-4o-mini",
        temperature=0,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = ask(client, prompt)
    assert plain.headers[HEADER] == "hit" and fresh_upstream.stats()["requests"] == 1
    answer = plain.parse()
    assert answer.choices[0].message.content == text == "w1 w2 w3 w4 w5 w6 w7"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.id == chunks[0].id and answer.usage is not None
    assert answer.usage.completion_tokens == 20


def test_a_streamed_request_is_served_from_a_stored_plain_answer(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    client = sdk(gw, key)
    prompt = unique("a plain answer first")
    fresh_upstream.script({"reply": "kept whole"})
    first = ask(client, prompt).parse()
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        temperature=0,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
    ) as resp:
        assert resp.headers[HEADER] == "hit"
        chunks = list(resp.parse())
    assert fresh_upstream.stats()["requests"] == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "kept whole"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == first.choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # the client did not ask for the usage chunk


def test_a_tool_call_answer_is_kept_and_served_in_both_forms(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    client = sdk(gw, key)
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    call = {"name": "weather", "arguments": {"city": "Paris"}}
    prompt = unique("weather?")
    fresh_upstream.script({"tool_call": call})
    streamed = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            temperature=0,
            tools=tools,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
        )
    )
    plain = ask(client, prompt, tools=tools)
    assert plain.headers[HEADER] == "hit" and fresh_upstream.stats()["requests"] == 1
    message = plain.parse().choices[0].message
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    assert message.tool_calls[0].function.name == "weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    ids = [t.id for c in streamed for ch in c.choices for t in ch.delta.tool_calls or [] if t.id]
    assert [message.tool_calls[0].id] == ids
    assert plain.parse().choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="no-temperature"),  # the providers' default samples
        pytest.param({"temperature": 0.7}, id="temperature-0.7"),
    ],
)
def test_sampled_requests_are_neither_served_nor_kept(
    gw: GatewayProcess,
    fresh_upstream: UpstreamProcess,
    sdk: Sdk,
    tenant: tuple[str, str],
    params: dict[str, float],
) -> None:
    name, key = tenant
    client = sdk(gw, key)
    prompt = unique()
    for _ in range(2):
        answer = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], **params
        )
        assert answer.headers[HEADER] == "miss"
    assert fresh_upstream.stats()["requests"] == 2
    assert [r["cache"] for r in rows(gw, name)] == ["bypass", "bypass"]
    assert ask(client, prompt).headers[HEADER] == "miss"  # temperature 0 was never kept


def test_no_cache_forces_a_fresh_answer_and_refreshes_the_entry(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, tenant: tuple[str, str]
) -> None:
    name, key = tenant
    client = sdk(gw, key)
    prompt = unique()
    fresh_upstream.script({"reply": "old answer"}, {"reply": "new answer"})
    assert ask(client, prompt).parse().choices[0].message.content == "old answer"
    fresh = ask(client, prompt, extra_headers={"Cache-Control": "no-cache"})
    assert fresh.headers[HEADER] == "miss"
    assert fresh.parse().choices[0].message.content == "new answer"
    again = ask(client, prompt)
    assert again.headers[HEADER] == "hit"
    assert again.parse().choices[0].message.content == "new answer"
    assert fresh_upstream.stats()["requests"] == 2
    assert [r["cache"] for r in rows(gw, name)] == ["miss", "refresh", "hit"]


def test_no_store_keeps_the_answer_out(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    client = sdk(gw, key)
    prompt = unique()
    ask(client, prompt, extra_headers={"Cache-Control": "no-store"})
    assert ask(client, prompt).headers[HEADER] == "miss"  # the first was not kept
    assert ask(client, prompt).headers[HEADER] == "hit"  # the second was
    # no-store keeps out, but may still be answered from what is there
    assert ask(client, prompt, extra_headers={"Cache-Control": "no-store"}).headers[HEADER] == "hit"
    sse_headers, _ = sse(
        gw,
        key,
        {"messages": [{"role": "user", "content": prompt}]},
        **{"Cache-Control": "no-cache"},
    )
    assert sse_headers[HEADER] == "miss"
    assert fresh_upstream.stats()["requests"] == 3


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(({"status": 400},), id="client-error"),
        pytest.param(({"status": 503},) * 3, id="server-error"),  # each attempt: 2 retries
    ],
)
def test_an_error_is_never_kept(
    gw: GatewayProcess,
    fresh_upstream: UpstreamProcess,
    sdk: Sdk,
    tenant: tuple[str, str],
    failure: tuple[dict[str, int], ...],
) -> None:
    _, key = tenant
    client = sdk(gw, key)
    prompt = unique()
    fresh_upstream.script(*failure)
    with pytest.raises(openai.APIStatusError):
        ask(client, prompt)
    tried = fresh_upstream.stats()["requests"]
    answer = ask(client, prompt)
    assert answer.headers[HEADER] == "miss" and answer.parse().choices[0].message.content
    assert fresh_upstream.stats()["requests"] == tried + 1
    assert ask(client, prompt).headers[HEADER] == "hit"


REFUSAL = {"refusal": "I can't help with that."}
FILTERED = {"finish_reason": "content_filter"}


@pytest.mark.parametrize(
    ("answer", "stream"),
    [
        # a plain answer cut short is an error (retried), tested above
        pytest.param({"cut": 4}, True, id="stream-cut"),
        pytest.param(REFUSAL, False, id="plain-refusal"),
        pytest.param(REFUSAL, True, id="stream-refusal"),
        pytest.param(FILTERED, False, id="plain-content-filter"),
        pytest.param(FILTERED, True, id="stream-content-filter"),
    ],
)
def test_an_incomplete_answer_is_never_kept(
    gw: GatewayProcess,
    fresh_upstream: UpstreamProcess,
    sdk: Sdk,
    tenant: tuple[str, str],
    answer: dict[str, object],
    stream: bool,
) -> None:
    name, key = tenant
    client = sdk(gw, key)
    prompt = unique("#words:9 hi")
    body = {"messages": [{"role": "user", "content": prompt}]}

    def call() -> str:
        if stream:
            headers, _ = sse(gw, key, body)
            return str(headers[HEADER])
        return str(ask(client, prompt).headers[HEADER])

    fresh_upstream.script(answer)
    assert call() == "miss"
    assert call() == "miss"  # the first answer was not kept: asked upstream again
    assert fresh_upstream.stats()["requests"] == 2
    assert call() == "hit"  # the second, whole, was
    assert [r["cache"] for r in rows(gw, name)] == ["miss", "miss", "hit"]
    assert rows(gw, name)[-1]["saved_pusd"] == ONE_CALL_PUSD


def test_an_answer_stopped_by_the_clients_own_limit_is_whole_and_kept(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    client = sdk(gw, key)
    prompt = unique("#words:30 long")
    first = ask(client, prompt, max_tokens=5).parse()
    assert first.choices[0].finish_reason == "length"
    again = ask(client, prompt, max_tokens=5)
    assert again.headers[HEADER] == "hit" and fresh_upstream.stats()["requests"] == 1


def test_an_idempotent_retry_replays_its_first_answer_even_when_that_was_a_hit(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk, tenant: tuple[str, str]
) -> None:
    name, key = tenant
    client = sdk(gw, key)
    prompt = unique()
    ask(client, prompt)
    idem = {"Idempotency-Key": f"k-{name}"}
    hit = ask(client, prompt, extra_headers=idem)
    retry = ask(client, prompt, extra_headers=idem)
    assert hit.headers[HEADER] == "hit" and "x-passerelle-idempotent-replay" not in hit.headers
    assert retry.headers["x-passerelle-idempotent-replay"] == hit.headers["x-request-id"]
    assert retry.content == hit.content and fresh_upstream.stats()["requests"] == 1
    assert [(r["status"], r["cache"]) for r in rows(gw, name)] == [
        ("ok", "miss"),
        ("ok", "hit"),
        ("replayed", None),  # served before the cache: neither a hit nor a miss
    ]
