"""``n`` choices from a provider that gives one per call (``providers/fanout.py``).

A scripted provider answers each call with one choice numbered by the call; the merged answer
has every call's choice at its place, the usage of all the calls, and a stream plays the calls
one after the other with its events re-indexed and one usage event at the end. A failing call
cancels its siblings and its error is the answer's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import orjson
import pytest

from passerelle.errors import ProviderFailedError
from passerelle.providers import fanout
from passerelle.providers.base import (
    Capabilities,
    Completion,
    Embeddings,
    Provider,
    StreamChunk,
    UpstreamRequest,
    Usage,
)


class OneChoice(Provider):
    """One choice per call, its text the call's number; ``fail_on`` fails that call."""

    name = "one"
    kind = "test"

    def __init__(self, fail_on: int | None = None, *, n: bool = False) -> None:
        self.capabilities = Capabilities(n=n)
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = self.most_in_flight = 0
        self.cancelled = 0
        self._fail_on = fail_on

    async def complete(self, request: UpstreamRequest) -> Completion:
        number = len(self.bodies)
        self.bodies.append(request.body)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01 if number != self._fail_on else 0)
            if number == self._fail_on:
                raise ProviderFailedError("upstream broke", provider=self.name)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        doc = {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": {"content": f"answer {number}"}}],
        }
        return Completion(orjson.dumps(doc), Usage(10, 2 + number, 4), "m")

    async def stream(self, request: UpstreamRequest) -> AsyncGenerator[StreamChunk, None]:
        number = len(self.bodies)
        self.bodies.append(request.body)
        envelope = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk", "model": "m"}
        for delta, finish in (({"role": "assistant"}, None), ({"content": f"a{number}"}, "stop")):
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            yield StreamChunk(orjson.dumps({**envelope, "choices": [choice]}), content_chars=2)
        usage = {"prompt_tokens": 10, "completion_tokens": 3}
        body = orjson.dumps({**envelope, "choices": [], "usage": usage})
        yield StreamChunk(body, usage=Usage(10, 3), forward=False)

    async def embed(self, request: UpstreamRequest) -> Embeddings:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def ask(n: int, *, include_usage: bool = False) -> UpstreamRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": n}
    return UpstreamRequest(body=body, upstream_model="m", stream=False, include_usage=include_usage)


def test_only_a_provider_without_n_fans_out() -> None:
    assert fanout.fans_out(OneChoice(), ask(3)) == 3
    assert fanout.fans_out(OneChoice(n=True), ask(3)) == 1
    assert fanout.fans_out(OneChoice(), ask(1)) == 1


@pytest.mark.asyncio(loop_scope="function")
async def test_n_calls_make_one_answer_with_every_choice_and_all_the_usage() -> None:
    provider = OneChoice()
    answer = await fanout.complete(provider, ask(6), 6)
    doc = orjson.loads(answer.body)
    assert [c["index"] for c in doc["choices"]] == list(range(6))
    assert sorted(c["message"]["content"] for c in doc["choices"]) == [
        f"answer {i}" for i in range(6)
    ]
    assert all(body["n"] == 1 for body in provider.bodies)
    assert provider.most_in_flight == fanout.MAX_PARALLEL
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (60, sum(range(2, 8)))
    assert answer.usage.cached_tokens == 24
    assert doc["usage"]["prompt_tokens"] == 60 and doc["usage"]["total_tokens"] == 60 + 27


@pytest.mark.asyncio(loop_scope="function")
async def test_after_a_failure_no_call_starts_and_those_in_flight_are_billed() -> None:
    provider = OneChoice(fail_on=1)
    spent = Usage()
    with pytest.raises(ProviderFailedError):
        await fanout.complete(provider, ask(6), 6, spent)
    # calls 0, 2 and 3 were in flight with the failing one 1: they finish (the provider bills
    # them) and their usage is what the failed fan-out spent; 4 and 5 never start
    assert len(provider.bodies) == fanout.MAX_PARALLEL
    assert provider.cancelled == 0 and provider.in_flight == 0
    assert (spent.input_tokens, spent.output_tokens) == (30, 2 + 4 + 5)


@pytest.mark.asyncio(loop_scope="function")
async def test_a_cancelled_fan_out_cancels_its_calls() -> None:
    provider = OneChoice()
    task = asyncio.ensure_future(fanout.complete(provider, ask(4), 4))
    await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.cancelled == 4 and provider.in_flight == 0


@pytest.mark.asyncio(loop_scope="function")
async def test_a_stream_plays_each_call_reindexed_then_one_usage_event() -> None:
    provider = OneChoice()
    chunks = [c async for c in fanout.stream(provider, ask(3, include_usage=True), 3)]
    payloads = [orjson.loads(c.data) for c in chunks]
    texts = {
        p["choices"][0]["index"]: p["choices"][0]["delta"]["content"]
        for p in payloads
        if p["choices"] and "content" in p["choices"][0]["delta"]
    }
    assert texts == {0: "a0", 1: "a1", 2: "a2"}
    assert {p["id"] for p in payloads} == {"chatcmpl-0"}  # one answer, one id
    assert [c.usage for c in chunks[:-1]] == [None] * 6  # the calls' usage events are folded
    last = chunks[-1]
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["prompt_tokens"] == 30
    assert last.usage is not None and last.usage.output_tokens == 9 and last.forward
    assert sum(c.content_chars for c in chunks) == 12


@pytest.mark.asyncio(loop_scope="function")
async def test_a_stream_hides_the_usage_event_from_a_client_that_did_not_ask() -> None:
    chunks = [c async for c in fanout.stream(OneChoice(), ask(2), 2)]
    assert not chunks[-1].forward and chunks[-1].usage is not None
