"""Legacy completions in the pure parts: parsing, the prompt estimate, the capability filter,
the budget's count of answers, and the fake upstream's minimal JSON instances."""

from __future__ import annotations

import json
from typing import Any

import pytest

from passerelle.errors import InvalidRequestError
from passerelle.pipeline.budget import choices
from passerelle.pipeline.context import Call
from passerelle.pipeline.parse import parse_completions
from passerelle.pipeline.targets import capability_filters
from passerelle.pricing.estimate import estimate_prompt_tokens
from tests.fakes.openai_features import minimal_instance


def call_of(body: dict[str, Any]) -> Call:
    call = Call(endpoint="completions", headers={}, raw_body=json.dumps(body).encode())
    parse_completions(call)
    return call


def test_a_prompt_and_its_limits_are_read() -> None:
    call = call_of({"model": "m", "prompt": "hi", "max_tokens": 5, "stream": True, "echo": True})
    assert (call.model, call.max_tokens, call.stream, call.body["echo"]) == ("m", 5, True, True)


@pytest.mark.parametrize("prompt", [None, 3, [], [1, "a"], {"text": "hi"}])
def test_a_missing_or_malformed_prompt_is_refused_naming_it(prompt: Any) -> None:
    body = {"model": "m"} if prompt is None else {"model": "m", "prompt": prompt}
    with pytest.raises(InvalidRequestError) as info:
        call_of(body)
    assert info.value.param == "prompt"


def test_the_estimate_counts_the_prompt_the_suffix_and_token_ids() -> None:
    assert estimate_prompt_tokens({"prompt": "x" * 200}) == 101
    assert estimate_prompt_tokens({"prompt": "x" * 200, "suffix": "y" * 100}) == 151
    assert estimate_prompt_tokens({"prompt": [[1, 2, 3], [4]]}) == 5


def test_a_batch_reserves_an_answer_per_prompt_and_choice() -> None:
    assert choices(call_of({"model": "m", "prompt": ["a", "b", "c"], "n": 2})) == 6
    assert choices(call_of({"model": "m", "prompt": [1, 2, 3]})) == 1


def test_completions_need_the_completions_capability() -> None:
    reasons = [f.reason for f in capability_filters("completions", True, {"prompt": "hi"})]
    assert reasons == ["capability 'completions'", "capability 'streaming'"]


def test_the_fake_answers_a_minimal_instance_of_a_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 2},
            "count": {"type": "integer", "exclusiveMinimum": 3},
            "note": {"type": ["string", "null"]},
        },
        "required": ["tags", "count"],
        "$defs": {"tag": {"enum": ["red", "blue"]}},
    }
    assert minimal_instance(schema) == {"tags": ["red", "red"], "count": 4}
