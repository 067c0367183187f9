"""The targets a call may use: computed at resolution, narrowed by stages, kept across a new route.

A chain of resolution, a test stage that removes targets (``tests/fakes/target_stages.py``) and
dispatch, in front of scripted providers: dispatch and the budget's worst case see only what is
left; a call left with nothing is refused with the filters and what each removed; a capability
the request needs (tools, a JSON response format, logprobs, image parts, streaming, embeddings)
removes providers that lack it. The same through a served gateway: tests/integration/test_eligible_targets.py.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import orjson
import pytest

from passerelle.errors import PermissionDeniedError
from passerelle.pipeline.budget import worst_case_nano
from passerelle.pipeline.chain import Stage, build_chain
from passerelle.pipeline.context import Call
from passerelle.pipeline.dispatch import Dispatch
from passerelle.pipeline.resolve import Pricer, Resolve
from passerelle.pipeline.targets import NoEligibleTargetError, Route, Target
from passerelle.pricing.catalogue import Catalogue, Price
from passerelle.providers.base import Capabilities
from tests.fakes.answer_stages import MODEL, SPLIT, scripted_target
from tests.fakes.target_stages import Exclude, Named

pytestmark = pytest.mark.asyncio(loop_scope="function")


def target(name: str, capabilities: Capabilities | None = None, usd: int = 1) -> Target:
    provider = Named(name, SPLIT)
    if capabilities is not None:
        provider.capabilities = capabilities
    price = Price(Decimal(usd), Decimal(usd), Decimal(usd), version=f"test-{usd}")
    return dataclasses.replace(scripted_target(provider), price=price)


def chat(**fields: Any) -> Call:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    return Call(
        endpoint="chat.completions",
        headers={},
        raw_body=orjson.dumps(body),
        body=body,
        model=MODEL,
        stream=bool(fields.get("stream")),
    )


async def run(call: Call, targets: tuple[Target, ...], *stages: Stage) -> Call:
    routes = {MODEL: Route(model=MODEL, targets=targets)}
    await build_chain([Resolve(routes), *stages, Dispatch()])(call)
    return call


async def test_a_stage_that_removes_targets_keeps_dispatch_off_them() -> None:
    a, b = target("a"), target("b")
    call = await run(chat(), (a, b), Exclude("policy: no 'a'", "a"))
    assert call.target is b
    assert call.targets == (b,)
    assert a.provider.asked == 0  # type: ignore[attr-defined]
    assert call.eligible.removed == [("policy: no 'a'", (a.label,))]


async def test_a_call_left_without_targets_is_refused_naming_the_filters() -> None:
    a, b = target("a"), target("b")
    with pytest.raises(PermissionDeniedError) as refused:
        await run(chat(), (a, b), Exclude("policy: no 'a'", "a"), Exclude("policy: no 'b'", "b"))
    err = refused.value
    assert err.status == 403 and err.code == "no_eligible_target"
    assert "policy: no 'a' removed a/gpt-4o-mini" in err.message
    assert "policy: no 'b' removed b/gpt-4o-mini" in err.message
    assert a.provider.asked == b.provider.asked == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fields", "feature", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tools"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "json_schema",
            "response_format",
        ),
        ({"response_format": {"type": "json_object"}}, "json_schema", "response_format"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs", "logprobs"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:,"}}],
                    }
                ]
            },
            "vision",
            "messages",
        ),
        ({"stream": True}, "streaming", "stream"),
    ],
)
async def test_a_feature_no_target_declares_is_a_400_naming_it(
    fields: dict[str, Any], feature: str, param: str
) -> None:
    every = Capabilities(True, True, True, True, True, logprobs=True)
    lacks = dataclasses.replace(every, **{feature: False})
    only = target("local", lacks)
    with pytest.raises(NoEligibleTargetError) as refused:
        await run(chat(**fields), (only,))
    err = refused.value
    assert err.status == 400 and err.code == "no_eligible_target" and err.param == param
    assert f"capability '{feature}' removed local/gpt-4o-mini" in err.message
    assert f"model '{MODEL}'" in err.message
    assert only.provider.asked == 0  # type: ignore[attr-defined]


async def test_a_feature_skips_the_targets_that_lack_it() -> None:
    plain, tooled = target("plain"), target("tooled", Capabilities(tools=True))
    call = await run(chat(tools=[{"type": "function", "function": {"name": "f"}}]), (plain, tooled))
    assert call.target is tooled
    assert call.eligible.removed == [("capability 'tools'", (plain.label,))]


async def test_embeddings_skip_a_provider_without_them() -> None:
    anthropic, openai = target("claude"), target("openai", Capabilities(embeddings=True))
    call = Call(endpoint="embeddings", headers={}, raw_body=b"{}", model=MODEL)
    await build_chain([Resolve({MODEL: Route(MODEL, (anthropic, openai))})])(call)
    assert call.targets == (openai,)


async def test_a_new_route_keeps_every_filter_of_the_call() -> None:
    a, b = target("a"), target("b")
    call = chat()
    call.resolved(Route(MODEL, (a, b)))
    call.narrow("policy: no 'a'", lambda t: t.provider.name != "a")
    call.reroute(Route("cheap", (target("a"), b)))  # another route, a target of the same provider
    assert call.targets == (b,)
    with pytest.raises(NoEligibleTargetError, match="policy: no 'a' removed a/gpt-4o-mini"):
        call.reroute(Route("cheaper", (target("a"),)))


async def test_the_worst_case_counts_only_the_targets_left() -> None:
    dear, cheap = target("dear", usd=100), target("cheap", usd=1)
    call = chat()
    call.resolved(Route(MODEL, (dear, cheap)))
    pricer = Pricer(Catalogue([]))
    both = worst_case_nano(call, pricer, output_tokens=1000, prompt_tokens=1000)
    call.narrow("policy: no 'dear'", lambda t: t is not dear)
    left = worst_case_nano(call, pricer, output_tokens=1000, prompt_tokens=1000)
    assert (both, left) == (200_000_000, 2_000_000)  # $0.2 and $0.002, in nano-dollars
