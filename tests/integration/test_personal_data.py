"""Personal data through a real gateway: it never reaches an upstream, and the client gets it back.

The fake upstream records every body it receives, and stands for three providers: ``us``
(jurisdiction US), ``eu`` (EU), and ``claude`` (an Anthropic provider in the EU, which would take
an Anthropic call natively). The policy: ``public`` (the default) allows personal data but is
raised to ``personal`` (EU only, pseudonymised) when some is found; ``blocked`` refuses it. Each
test sends names, e-mail addresses, phone numbers and French identifiers where a provider would
see them (the system prompt, the history, tool arguments and results, a legacy prompt, an
embedding's input) and checks that none of the values is in anything any upstream received,
and that the answer, which the fake writes with placeholders (split across stream events and
altered the way models alter them), comes back with the values.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import anthropic
import openai
import pytest
from openai import OpenAI

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.gateway import openai_provider as provider
from tests.fakes.upstream import UpstreamProcess

pytestmark = pytest.mark.pii_models

NAME, OTHER = "Jean Dupont", "Margaret Thompson"
EMAIL, PHONE = "jean.dupont@example.fr", "06 12 34 56 78"
NIR, IBAN = "1 84 12 76 451 089 46", "FR76 3000 6000 0112 3456 7890 189"
VALUES = [NAME, OTHER, EMAIL, PHONE, NIR, IBAN, "0612345678", "jean.dupont"]
BLOCKED = {"X-Passerelle-Data-Class": "blocked"}


def target(name: str, model: str) -> dict[str, Any]:
    return {"provider": name, "upstream_model": model, "price": {"input": 1, "output": 1}}


def config_for(upstream: UpstreamProcess, **detection: Any) -> dict[str, Any]:
    config = fake_upstream_config(upstream.url)
    config["providers"] = [
        provider("us", upstream.base_url, jurisdiction="US"),
        provider("eu", upstream.base_url, jurisdiction="EU"),
        {**provider("claude", upstream.url, jurisdiction="EU"), "kind": "anthropic"},
    ]
    config["models"] = [
        {"name": "mixed", "targets": [target("us", "us-1"), target("eu", "eu-1")]},
        {"name": "us-only", "targets": [target("us", "us-2")]},
        {"name": "embed", "targets": [target("us", "us-embed"), target("eu", "eu-embed")]},
        {"name": "claude-test", "targets": [target("claude", "c-1")]},
    ]
    config["sovereignty"] = {
        "default_class": "public",
        "personal_class": "personal",
        "classes": {
            "public": {"allow": ["any"], "personal_data": "allow"},
            "personal": {"allow": ["EU", "self-hosted"], "personal_data": "pseudonymise"},
            "blocked": {"allow": ["any"], "personal_data": "block"},
        },
        **({"detection": detection} if detection else {}),
    }
    config["cache"] = {"exact": {"ttl_s": 600}}
    config["prompt_capture"] = [{"tenant": "acme"}]
    config["audit"] = {"key": "env:AUDIT_KEY", "flush_every_s": 0.05}
    return config


AUDIT_ENV = {"AUDIT_KEY": "audit-key-for-tests-0123456789abcdef"}


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("pii")
    with GatewayProcess(work, config_for(upstream), env=AUDIT_ENV, timeout=120) as g:
        yield g


@pytest.fixture
def client(gw: GatewayProcess, sdk: Sdk) -> OpenAI:
    return sdk(gw)


def received(upstream: UpstreamProcess) -> str:
    """Everything the upstream was sent since the last reset, as one text."""
    return json.dumps(upstream.stats()["bodies"], ensure_ascii=False)


def assert_none_leaked(upstream: UpstreamProcess) -> str:
    seen = received(upstream)
    assert seen != "[]", "the upstream received nothing: the test proves nothing"
    leaked = [v for v in VALUES if v in seen]
    assert not leaked, f"personal values reached the upstream: {leaked}"
    return seen


def conversation() -> list[dict[str, Any]]:
    arguments = json.dumps({"to": EMAIL, "subject": f"Hello {OTHER}"})
    return [
        {"role": "system", "content": f"You help {NAME} (phone {PHONE}, NIR {NIR})."},
        {"role": "user", "content": f"My name is {NAME}. Write to {OTHER}."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "mail", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": f"Sent. Refund to IBAN {IBAN}."},
        {"role": "user", "content": [{"type": "text", "text": f"Thanks, call me on {PHONE}."}]},
    ]


def test_no_personal_value_of_any_turn_reaches_the_upstream_and_the_answer_is_restored(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    fresh_upstream.script({"reply": "Dear <PERSON_1>, I wrote to <PERSON_2> at <EMAIL_1>."})
    raw = client.chat.completions.with_raw_response.create(model="mixed", messages=conversation())
    seen = assert_none_leaked(fresh_upstream)
    assert "<PERSON_1>" in seen and "<EMAIL_1>" in seen and "<NIR_1>" in seen
    assert "<IBAN_1>" in seen and "<PHONE_1>" in seen
    answer = raw.parse().choices[0].message.content
    assert answer == f"Dear {NAME}, I wrote to {OTHER} at {EMAIL}."
    # found personal data raised the call to its class, which allows only the EU
    assert raw.headers["x-passerelle-data-class"] == "personal"
    assert raw.headers["x-passerelle-target"] == "eu/eu-1"
    assert "PERSON=2" in raw.headers["x-passerelle-pseudonymised"]


def test_the_audit_trail_counts_what_was_pseudonymised_by_type_never_the_values(
    fresh_upstream: UpstreamProcess, client: OpenAI, gw: GatewayProcess
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="mixed", messages=conversation())
    request_id = raw.headers["x-request-id"]
    deadline = time.monotonic() + 10
    records: list[str] = []
    while not records and time.monotonic() < deadline:
        time.sleep(0.1)
        with closing(sqlite3.connect(gw.workdir / "passerelle-data" / "ledger.db")) as db:
            records = [r[0] for r in db.execute("SELECT body FROM audit_records")]
            records = [r for r in records if request_id in r]
    [record] = [json.loads(r) for r in records]
    assert record["pseudonymised"] == {
        "PERSON": 2,
        "EMAIL_ADDRESS": 1,
        "PHONE_NUMBER": 1,
        "FR_NIR": 1,
        "IBAN_CODE": 1,
    }
    assert record["data_class"] == "personal" and record["jurisdiction"] == "EU"
    assert not [v for v in VALUES if v in records[0]]


def test_a_call_without_personal_data_keeps_its_class_and_its_route(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mixed", messages=[{"role": "user", "content": "what is the capital of france?"}]
    )
    assert raw.headers["x-passerelle-data-class"] == "public"
    assert raw.headers["x-passerelle-target"] == "us/us-1"


def test_a_streamed_answer_is_restored_with_placeholders_split_and_altered(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    # the fake streams one word per event: "<PERSON 1>" arrives as "<PERSON" then " 1>"
    fresh_upstream.script({"reply": "Dear <PERSON 1>, [person_2] has number PHONE_1 now"})
    stream = client.chat.completions.create(model="mixed", messages=conversation(), stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert_none_leaked(fresh_upstream)
    assert "".join(pieces) == f"Dear {NAME}, {OTHER} has number {PHONE} now"
    assert not any("<" in p or "PERSON" in p.upper() for p in pieces)


def test_a_class_that_blocks_personal_data_refuses_with_403_and_sends_nothing(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(
            model="mixed",
            messages=[{"role": "user", "content": f"Mail {EMAIL} please"}],
            extra_headers=BLOCKED,
        )
    assert refused.value.code == "personal_data_blocked"
    assert "EMAIL_ADDRESS" in refused.value.message and EMAIL not in refused.value.message
    assert fresh_upstream.stats()["requests"] == 0


def test_legacy_prompts_and_embeddings_inputs_are_pseudonymised(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    fresh_upstream.script({"reply": "File of <PERSON_1>"})
    text = client.completions.create(
        model="mixed", prompt=f"Summarise the file of {NAME}, {EMAIL}."
    )
    assert text.choices[0].text == f"File of {NAME}"
    client.embeddings.create(model="embed", input=[f"{NAME} lives here", f"call {PHONE}"])
    seen = assert_none_leaked(fresh_upstream)
    assert "<PERSON_1>" in seen and "<PHONE_1>" in seen
    assert set(fresh_upstream.stats()["models"]) == {"eu-1", "eu-embed"}


def test_token_arrays_that_cannot_be_checked_are_refused(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="embed", input=[[1, 2, 3]], extra_headers=BLOCKED)
    assert refused.value.code == "personal_data_undetectable"
    assert fresh_upstream.stats()["requests"] == 0


def test_an_anthropic_call_is_not_passed_through_with_its_values(
    fresh_upstream: UpstreamProcess, gw: GatewayProcess
) -> None:
    fresh_upstream.script({"reply": "Bonjour <PERSON_1>"})
    with anthropic.Anthropic(base_url=gw.url, api_key=TENANT_KEYS["acme"], max_retries=0) as ac:
        answer = ac.messages.create(
            model="claude-test",
            max_tokens=64,
            system=f"The customer is {NAME}.",
            messages=[{"role": "user", "content": f"My IBAN is {IBAN}, greet me."}],
        )
    assert_none_leaked(fresh_upstream)
    assert answer.content[0].type == "text" and answer.content[0].text == f"Bonjour {NAME}"
    fresh_upstream.reset()
    fresh_upstream.script({"reply": "Bonjour <PERSON 1> !"})  # one word per event: split
    ac = anthropic.Anthropic(base_url=gw.url, api_key=TENANT_KEYS["acme"], max_retries=0)
    with (
        ac,
        ac.messages.stream(
            model="claude-test",
            max_tokens=64,
            messages=[{"role": "user", "content": f"I am {NAME}, greet me."}],
        ) as stream,
    ):
        streamed = "".join(stream.text_stream)
    assert_none_leaked(fresh_upstream)
    assert streamed == f"Bonjour {NAME} !"


def test_a_responses_call_is_pseudonymised_and_its_answer_restored(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    fresh_upstream.script({"reply": "Noted, <PERSON_1>."})
    answer = client.responses.create(
        model="mixed", instructions=f"The user is {NAME}.", input=f"Send it to {EMAIL}."
    )
    assert_none_leaked(fresh_upstream)
    assert answer.output_text == f"Noted, {NAME}."


def test_two_calls_differing_only_in_a_name_share_a_cache_entry_restored_for_each(
    fresh_upstream: UpstreamProcess, client: OpenAI, gw: GatewayProcess
) -> None:
    fresh_upstream.script({"reply": "Hello <PERSON_1>, noted."})
    asks = []
    for name in (NAME, OTHER):
        asks.append(
            client.chat.completions.with_raw_response.create(
                model="mixed",
                temperature=0,
                messages=[{"role": "user", "content": f"Please greet {name} for the cache test."}],
            )
        )
    assert [a.headers["x-passerelle-cache"] for a in asks] == ["miss", "hit"]
    assert fresh_upstream.stats()["requests"] == 1
    assert [a.parse().choices[0].message.content for a in asks] == [
        f"Hello {NAME}, noted.",
        f"Hello {OTHER}, noted.",
    ]
    with closing(sqlite3.connect(gw.workdir / "passerelle-data" / "ledger.db")) as db:
        prompts = [row[0] for row in db.execute("SELECT prompt FROM prompts")]
    assert prompts and any("<PERSON_1>" in p for p in prompts)
    assert not [p for p in prompts for v in VALUES if v in p]


@pytest.fixture(scope="module")
def slow(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway whose detector cannot finish in the time it is given (a microsecond)."""
    config = config_for(upstream, timeout_ms=0.001)
    work = tmp_path_factory.mktemp("pii-slow")
    with GatewayProcess(work, config, env=AUDIT_ENV, timeout=120) as g:
        yield g


def test_a_detector_that_fails_refuses_the_call_and_sends_nothing(
    fresh_upstream: UpstreamProcess, slow: GatewayProcess, sdk: Sdk
) -> None:
    client = sdk(slow)
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as refused:
            client.chat.completions.create(
                model="mixed",
                # a text of its own each time: one the detector read in the end would be known
                messages=[{"role": "user", "content": f"I am {NAME}, {EMAIL}, stream={stream}"}],
                stream=stream,
            )
        assert refused.value.status_code == 503
        assert refused.value.code == "personal_data_detection_failed"
    assert fresh_upstream.stats()["requests"] == 0
