"""The official ``anthropic`` SDK against the real gateway: ``POST /v1/messages`` end to end.

Two targets behind one gateway: ``gpt-4o-mini`` on an OpenAI-kind provider (the fake upstream's
``/v1/chat/completions``: the call is translated both ways) and ``claude-test`` on an
``anthropic`` provider (the fake's ``/v1/messages``: the call is passed through as the client
sent it). Each call is metered, budgeted and refused in Anthropic's terms like any other.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import orjson
import pytest

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, fake_upstream_config, openai_provider
from tests.fakes.upstream import UpstreamProcess

REPLY = "Hello from fake upstream."
NATIVE = "claude-test"
TRANSLATED = "gpt-4o-mini"
BROKE_KEY = "sk-test-broke"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER = {
    "name": "weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(upstream.url)
    claude = {**openai_provider("claude", upstream.url), "kind": "anthropic"}
    config["providers"] = [openai_provider("fake", upstream.url + "/v1"), claude]
    price = {"input": 3, "output": 15, "cached_input": 0.3}
    config["models"] += [
        {
            "name": NATIVE,
            "targets": [{"provider": "claude", "upstream_model": "claude-up", "price": price}],
        }
    ]
    config["tenants"].append(
        {
            "name": "broke",
            "keys": ["env:BROKE_KEY"],
            "budgets": [{"usd": 0.000001, "period": "day"}],
        }
    )
    with GatewayProcess(
        tmp_path_factory.mktemp("anthropic-sdk"), config, env={"BROKE_KEY": BROKE_KEY}
    ) as g:
        yield g


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key=TENANT_KEYS["acme"], max_retries=0) as c:
        yield c


def ledger_row(gw: GatewayProcess, request_id: str) -> dict[str, Any]:
    rows = gw.ledger_rows("request_id = ? AND status <> 'attempt_failed'", (request_id,))
    assert len(rows) == 1
    return rows[0]


def hi(text: str = "hi") -> list[Any]:
    return [{"role": "user", "content": text}]


# -- translated: an OpenAI-kind target --------------------------------------------------------


def test_a_message_to_an_openai_target_is_translated_metered_and_in_the_ledger(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: anthropic.Anthropic
) -> None:
    raw = client.messages.with_raw_response.create(
        model=TRANSLATED, max_tokens=512, system="Be brief.", messages=hi("hi #usage:1000,500,200")
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == REPLY  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (800, 500)
    assert message.usage.cache_read_input_tokens == 200
    sent = fresh_upstream.stats()
    assert sent["by_path"] == {"/v1/chat/completions": 1}
    assert sent["last_request"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["last_request"]["max_tokens"] == 512
    row = ledger_row(gw, raw.headers["x-request-id"])
    assert row["endpoint"] == "messages"
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (1000, 500, 200)
    expected = (
        Decimal(800) * Decimal("0.15") + 200 * Decimal("0.075") + 500 * Decimal("0.6")
    ) / 10**6
    assert Decimal(raw.headers["x-passerelle-cost-usd"]) == expected


def test_a_stream_from_an_openai_target_reads_as_anthropics_stream(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: anthropic.Anthropic
) -> None:
    with client.messages.stream(model=TRANSLATED, max_tokens=64, messages=hi()) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(REPLY.split())
    assert final.usage.input_tokens > 0
    events = client.messages.create(model=TRANSLATED, max_tokens=64, messages=hi(), stream=True)
    names = [event.type for event in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}  # the SDK hides the ping


def test_tools_round_trip_through_an_openai_target(
    fresh_upstream: UpstreamProcess, client: anthropic.Anthropic
) -> None:
    fresh_upstream.script({"tool_call": {"name": "weather", "arguments": {"city": "Paris"}}})
    asked = hi("weather in Paris?")
    message = client.messages.create(
        model=TRANSLATED,
        max_tokens=64,
        messages=asked,
        tools=[WEATHER],
        tool_choice={"type": "any"},
    )
    assert message.stop_reason == "tool_use"
    (use,) = message.content
    assert use.type == "tool_use" and use.name == "weather" and use.input == {"city": "Paris"}
    sent = fresh_upstream.stats()["last_request"]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    assert sent["tool_choice"] == "required"
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}
    answer = client.messages.create(
        model=TRANSLATED,
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            *asked,
            {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [result]},
        ],
    )
    assert answer.content[0].text == "The tool answered: 18C and sunny"  # type: ignore[union-attr]
    sent = fresh_upstream.stats()["last_request"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "18C and sunny"}


def test_a_streamed_tool_call_arrives_as_input_json_deltas(
    fresh_upstream: UpstreamProcess, client: anthropic.Anthropic
) -> None:
    fresh_upstream.script({"tool_call": {"name": "weather", "arguments": {"city": "Oslo"}}})
    with client.messages.stream(
        model=TRANSLATED, max_tokens=64, messages=hi("weather?"), tools=[WEATHER]
    ) as stream:
        final = stream.get_final_message()
    (use,) = final.content
    assert use.type == "tool_use" and use.input == {"city": "Oslo"}
    assert final.stop_reason == "tool_use"


def test_an_image_block_reaches_the_openai_target_as_an_image_url(
    fresh_upstream: UpstreamProcess, client: anthropic.Anthropic
) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    content = [image, {"type": "text", "text": "what is this?"}]
    client.messages.create(
        model=TRANSLATED, max_tokens=64, messages=[{"role": "user", "content": content}]
    )
    (part, _) = fresh_upstream.stats()["last_request"]["messages"][0]["content"]
    assert part == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}


def test_a_stream_cut_by_the_upstream_ends_with_an_error_event(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    body = {"model": TRANSLATED, "max_tokens": 64, "stream": True, "messages": hi("hi #cut:3")}
    req = urllib.request.Request(
        gw.url + "/v1/messages",
        data=orjson.dumps(body),
        headers={"x-api-key": TENANT_KEYS["acme"], "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        events = resp.read().split(b"\n\n")
    assert events[0].startswith(b"event: message_start\n")
    last = [e for e in events if e][-1]
    name, data = last.split(b"\n")
    assert name == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: "))["type"] == "error"


# -- native: an anthropic-kind target ---------------------------------------------------------


def test_a_message_to_an_anthropic_target_passes_through_with_its_cache_breakpoints(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: anthropic.Anthropic
) -> None:
    system = [{"type": "text", "text": "A long context.", "cache_control": {"type": "ephemeral"}}]
    raw = client.messages.with_raw_response.create(
        model=NATIVE, max_tokens=64, system=system, messages=hi("hi #usage:100,7,900")
    )
    message = raw.parse()
    assert message.id.startswith("msg_fake")  # the upstream's own answer, untouched
    assert message.model == "claude-up"
    assert message.usage.cache_read_input_tokens == 900 and message.usage.input_tokens == 100
    sent = fresh_upstream.stats()
    assert sent["by_path"] == {"/v1/messages": 1}
    assert sent["last_request"]["system"] == system  # the breakpoint arrived
    assert sent["last_request"]["model"] == "claude-up"
    assert sent["last_request"]["max_tokens"] == 64
    row = ledger_row(gw, raw.headers["x-request-id"])
    assert row["endpoint"] == "messages" and row["provider"] == "claude"
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (1000, 7, 900)
    expected = (100 * Decimal(3) + 900 * Decimal("0.3") + 7 * Decimal(15)) / 10**6
    assert Decimal(raw.headers["x-passerelle-cost-usd"]) == expected


def test_a_stream_from_an_anthropic_target_is_its_own_events_and_is_metered(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: anthropic.Anthropic
) -> None:
    with client.messages.with_streaming_response.create(
        model=NATIVE, max_tokens=64, messages=hi("hi #usage:40,5,60"), stream=True
    ) as resp:
        request_id = resp.headers["x-request-id"]
        body = b"".join(resp.iter_bytes())
    names = [e.split(b"\n")[0] for e in body.split(b"\n\n") if e]
    assert names[0] == b"event: message_start" and names[-1] == b"event: message_stop"
    assert b"msg_fake" in body
    with client.messages.stream(model=NATIVE, max_tokens=64, messages=hi()) as stream:
        assert "".join(stream.text_stream) == REPLY
    assert fresh_upstream.stats()["last_request"]["stream"] is True
    row = ledger_row(gw, request_id)
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (100, 5, 60)
    assert row["stream"] == 1 and row["endpoint"] == "messages"


def test_a_native_tool_call_comes_back_as_anthropic_said_it(
    fresh_upstream: UpstreamProcess, client: anthropic.Anthropic
) -> None:
    fresh_upstream.script({"tool_call": {"name": "weather", "arguments": {"city": "Rome"}}})
    message = client.messages.create(
        model=NATIVE, max_tokens=64, messages=hi("weather?"), tools=[WEATHER]
    )
    assert message.content[0].type == "tool_use" and message.content[0].input == {"city": "Rome"}
    assert fresh_upstream.stats()["last_request"]["tools"] == [WEATHER]


# -- the door: keys, headers, token counting, errors -------------------------------------------


@pytest.mark.parametrize("how", ["api_key", "auth_token"])
def test_the_key_is_read_from_x_api_key_or_a_bearer_token_and_betas_are_tolerated(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, how: str
) -> None:
    beta = {"anthropic-beta": "made-up-feature-2099-01-01"}
    with anthropic.Anthropic(
        base_url=gw.url, max_retries=0, default_headers=beta, **{how: TENANT_KEYS["acme"]}
    ) as c:
        message = c.messages.create(model=TRANSLATED, max_tokens=16, messages=hi())
    assert message.content[0].text == REPLY  # type: ignore[union-attr]


def test_a_passthrough_carries_the_clients_beta_flags_and_a_translation_does_not(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    beta = {"anthropic-beta": "prompt-caching-2024-07-31,made-up-2099-01-01"}
    with anthropic.Anthropic(
        base_url=gw.url, max_retries=0, default_headers=beta, api_key=TENANT_KEYS["acme"]
    ) as c:
        c.messages.create(model=NATIVE, max_tokens=16, messages=hi())
        native = {k.lower(): v for k, v in fresh_upstream.stats()["last_headers"].items()}
        c.messages.create(model=TRANSLATED, max_tokens=16, messages=hi())
        translated = {k.lower(): v for k, v in fresh_upstream.stats()["last_headers"].items()}
    assert native["anthropic-beta"] == beta["anthropic-beta"]
    assert "anthropic-beta" not in translated  # an OpenAI upstream has no use for them


def test_count_tokens_estimates_the_prompt(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model=TRANSLATED, messages=hi())
    longer = client.messages.count_tokens(
        model=NATIVE, system="Be brief.", messages=hi("hi " * 200), tools=[WEATHER]
    )
    assert 0 < short.input_tokens < longer.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=hi())


def test_errors_reach_the_sdk_as_its_own_exception_classes(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: anthropic.Anthropic
) -> None:
    stranger = anthropic.Anthropic(base_url=gw.url, api_key="sk-wrong", max_retries=0)
    with stranger, pytest.raises(anthropic.AuthenticationError) as denied:
        stranger.messages.create(model=TRANSLATED, max_tokens=16, messages=hi())
    assert denied.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.post("/v1/messages", body={"model": TRANSLATED, "messages": hi()}, cast_to=object)
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in bad.value.message
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=16, messages=hi())
    with pytest.raises(anthropic.BadRequestError):  # the upstream's own refusal
        client.messages.create(model=TRANSLATED, max_tokens=16, messages=hi("#status:400"))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=NATIVE, max_tokens=16, messages=hi("#status:400"))
    fresh_upstream.script({"status": 529}, {"status": 529}, {"status": 529})
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(model=NATIVE, max_tokens=16, messages=hi())
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_an_exhausted_hard_budget_is_a_429_in_anthropics_shape(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess
) -> None:
    broke = anthropic.Anthropic(base_url=gw.url, api_key=BROKE_KEY, max_retries=0)
    with broke, pytest.raises(anthropic.RateLimitError) as refused:
        broke.messages.create(model=TRANSLATED, max_tokens=64, messages=hi())
    assert refused.value.status_code == 429
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert fresh_upstream.stats()["requests"] == 0  # refused before the upstream was paid
    row = ledger_row(gw, refused.value.response.headers["x-request-id"])
    assert row["endpoint"] == "messages" and row["error_code"] == "insufficient_quota"


# -- an idempotent retry replays the first answer in the client's own terms ---------------------


def raw_messages(
    gw: GatewayProcess, body: dict[str, Any], key: str
) -> tuple[dict[str, str], bytes]:
    req = urllib.request.Request(
        gw.url + "/v1/messages",
        data=orjson.dumps(body),
        headers={
            "content-type": "application/json",
            "x-api-key": TENANT_KEYS["acme"],
            "anthropic-version": "2023-06-01",
            "Idempotency-Key": key,
        },
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        return {k.lower(): v for k, v in resp.headers.items()}, resp.read()


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED])
@pytest.mark.parametrize("stream", [False, True])
def test_an_idempotent_retry_replays_the_first_answer_byte_for_byte(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, model: str, stream: bool
) -> None:
    """Passed through or translated, plain or streamed: the replay is what the client was sent
    the first time (Anthropic's events keep their names), and the upstream is asked once."""
    body = {"model": model, "max_tokens": 32, "messages": hi(), "stream": stream}
    key = f"idem-{model}-{stream}"
    first_headers, first = raw_messages(gw, body, key)
    again_headers, again = raw_messages(gw, body, key)
    assert again == first
    assert again_headers["x-passerelle-idempotent-replay"] == first_headers["x-request-id"]
    assert fresh_upstream.stats()["requests"] == 1
    if stream:
        assert first.startswith(b"event: message_start\n")
    else:
        assert orjson.loads(first)["type"] == "message"
