"""What the embedded model is asked beyond plain text: served for real, or refused by name.

The shipped Gemma 3 270M behind a real ``passerelle serve``, driven with the openai SDK. A JSON
schema is enforced by llama.cpp's grammar-constrained sampling, so the answer parses and has the
schema's shape, plain and streamed; a schema the grammar converter cannot take is a 400 on
``response_format``. ``n: 2`` is two generations. ``logprobs`` and tools, which the engine does
not give, are 400s naming the feature and the model (before, ``logprobs`` came back as a 200
without them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from openai import BadRequestError, OpenAI

from tests.fakes.gateway import GatewayProcess
from tests.fakes.upstream import UpstreamProcess
from tests.integration.test_local_model import FRANCE, client_for, local_config

pytestmark = pytest.mark.local_model

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
}
PLACE = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}


@pytest.fixture(scope="module")
def client(upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    with (
        GatewayProcess(tmp_path_factory.mktemp("local-features"), local_config(upstream.url)) as gw,
        client_for(gw) as sdk,
    ):
        yield sdk


def test_a_json_schema_is_answered_with_json_of_that_shape(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="local",
        messages=FRANCE,
        temperature=0,
        max_tokens=60,
        response_format=PLACE,  # type: ignore[arg-type]
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"
    doc = json.loads(choice.message.content or "")
    assert set(doc) == {"city", "country"}
    assert all(isinstance(v, str) for v in doc.values())


def test_a_streamed_json_object_parses_unless_cut_by_max_tokens(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="local",
        messages=FRANCE,
        temperature=0.7,
        seed=3,
        max_tokens=200,
        response_format={"type": "json_object"},
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])
    if finish == ["stop"]:  # the grammar closed the object
        assert isinstance(json.loads(text), dict)
    else:  # cut short: a prefix of an object, never prose
        assert text.lstrip().startswith("{")


def test_a_schema_the_grammar_cannot_take_is_a_400(client: OpenAI) -> None:
    odd = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wat"}}}
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(
            model="local",
            messages=FRANCE,
            max_tokens=8,
            response_format=odd,  # type: ignore[arg-type]
        )
    assert (refused.value.code, refused.value.param) == ("invalid_json_schema", "response_format")


def test_two_choices_are_two_generations(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="local", messages=FRANCE, n=2, max_tokens=12, temperature=0.7
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.message.content for c in answer.choices)


@pytest.mark.parametrize(
    ("fields", "feature", "param"),
    [
        ({"logprobs": True}, "logprobs", "logprobs"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            "tools",
            "tools",
        ),
    ],
)
def test_what_the_engine_cannot_give_is_a_400_naming_it(
    client: OpenAI, fields: dict[str, object], feature: str, param: str
) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(
            model="local",
            messages=FRANCE,
            max_tokens=8,
            **fields,  # type: ignore[arg-type]
        )
    err = refused.value
    assert (err.code, err.param) == ("no_eligible_target", param)
    assert f"capability '{feature}'" in err.message and "model 'local'" in err.message
