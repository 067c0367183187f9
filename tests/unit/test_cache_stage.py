"""The cache stage alone, in process: what it keeps, under which key, and how it fails.

Driven with the stage harness (``tests/unit/stages.py``): a ``FakeNext`` plays the rest of the
chain and counts the calls that reached it, so a hit is a call that never got there.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from passerelle.errors import StoreError
from passerelle.pipeline.cache import Cache, ExactLookup
from passerelle.pipeline.cache_key import CachePolicy, exact_key
from passerelle.pipeline.cached import CachedAnswer
from passerelle.pipeline.context import Call
from passerelle.store.answers import Bounds, LocalAnswers
from passerelle.store.records import CacheOutcome, SavingSource
from tests.unit.stages import HI, Clock, FakeNext, call, completion, route, serve

pytestmark = pytest.mark.asyncio(loop_scope="function")
DETERMINISTIC = {"messages": HI, "temperature": 0}


def cache(policy: CachePolicy | None = None) -> tuple[Cache, LocalAnswers]:
    store = LocalAnswers(Bounds(ttl_s=60, max_entries=100, max_bytes=10**6), Clock())
    return Cache([ExactLookup(store)], policy or CachePolicy()), store


async def test_a_hit_never_reaches_the_rest_of_the_chain_and_saves_the_calls_cost() -> None:
    stage, _ = cache()
    downstream = FakeNext(completion("Paris", cost="0.0021"))
    await serve(stage, first := call(DETERMINISTIC), downstream)
    await serve(stage, again := call(DETERMINISTIC), downstream)
    assert downstream.reached == 1
    assert (first.cache, again.cache) == (CacheOutcome.MISS, CacheOutcome.HIT)
    assert again.saved_usd == Decimal("0.0021") and again.saving_source == SavingSource.CACHE_EXACT
    assert again.target is None and again.usage is not None and again.usage.output_tokens == 0
    assert again.response_headers["x-passerelle-cache"] == "hit"


async def test_a_call_moved_to_a_cheaper_model_is_kept_as_that_models_answer() -> None:
    stage, _ = cache()
    premium, cheap = route("premium"), route("cheap")
    degraded = FakeNext(completion("cheap answer"), during=lambda c: c.reroute(cheap))
    await serve(stage, call(DETERMINISTIC, route=premium), degraded)
    # asking for the premium model again is a miss: it never gets the cheaper model's answer
    fresh = FakeNext(completion("premium answer"))
    await serve(stage, call(DETERMINISTIC, route=premium), fresh)
    assert fresh.reached == 1
    # and the cheaper model's own callers are served the answer it gave
    await serve(stage, hit := call(DETERMINISTIC, route=cheap), FakeNext())
    assert hit.cache == CacheOutcome.HIT


def stopped_at_length(c: Call) -> None:
    completion("cut")(c)
    doc = orjson.loads(c.result.body)  # type: ignore[union-attr]
    doc["choices"][0]["finish_reason"] = "length"
    c.result.body = orjson.dumps(doc)  # type: ignore[union-attr]


async def test_an_answer_stopped_by_a_limit_the_gateway_set_is_not_kept() -> None:
    stage, store = cache()

    def ceiling(c: Call) -> None:
        c.max_tokens = 4096  # what the budget stage sends when the client set no limit

    await serve(stage, call(DETERMINISTIC), FakeNext(stopped_at_length, during=ceiling))
    assert len(store) == 0
    own = {**DETERMINISTIC, "max_tokens": 5}
    await serve(stage, call(own), FakeNext(stopped_at_length))
    assert len(store) == 1  # the client's own limit: the answer it asked for


class Unreachable(LocalAnswers):
    async def get(self, key: str) -> bytes | None:
        raise StoreError("redis is unreachable")

    async def put(self, key: str, entry: bytes) -> None:
        raise StoreError("redis is unreachable")


async def test_an_unreachable_store_is_a_miss_never_a_failed_call() -> None:
    store = Unreachable(Bounds(ttl_s=60, max_entries=10, max_bytes=10**6))
    stage = Cache([ExactLookup(store)], CachePolicy())
    downstream = FakeNext(completion("still answered"))
    await serve(stage, c := call(DETERMINISTIC), downstream)
    await serve(stage, call(DETERMINISTIC), downstream)
    assert downstream.reached == 2 and c.status == "ok"
    assert c.response_headers["x-passerelle-cache"] == "miss"


async def test_an_entry_that_is_not_the_tenants_own_is_never_served() -> None:
    stage, store = cache()
    c = call(DETERMINISTIC, tenant="globex")
    assert c.route is not None
    forged = CachedAnswer(tenant="acme", body=b'{"choices": []}', events=None)
    await store.put(exact_key(c, per_user=False), forged.dumps())
    downstream = FakeNext(completion("globex's own"))
    await serve(stage, c, downstream)
    assert downstream.reached == 1 and c.cache == CacheOutcome.MISS


async def test_an_entry_of_another_layout_is_a_miss() -> None:
    stage, store = cache()
    c = call(DETERMINISTIC)
    assert c.route is not None
    await store.put(exact_key(c, per_user=False), b'{"v": 99, "tenant": "acme"}')
    downstream = FakeNext(completion())
    await serve(stage, c, downstream)
    assert downstream.reached == 1


async def test_an_answer_over_the_entry_bound_is_not_kept() -> None:
    stage, store = cache(CachePolicy(max_entry_bytes=300))
    await serve(stage, call(DETERMINISTIC), FakeNext(completion("x" * 400)))
    assert len(store) == 0
    await serve(stage, call({**DETERMINISTIC, "seed": 1}), FakeNext(completion("short")))
    assert len(store) == 1


@pytest.mark.parametrize(
    ("policy", "model"),
    [
        (CachePolicy(models=frozenset({"other"})), "gpt-4o-mini"),
        (CachePolicy(except_models=frozenset({"gpt-4o-mini"})), "gpt-4o-mini"),
    ],
)
async def test_a_model_left_out_is_neither_served_nor_kept(policy: CachePolicy, model: str) -> None:
    stage, store = cache(policy)
    await serve(stage, c := call(DETERMINISTIC, route=route(model)), FakeNext(completion()))
    assert len(store) == 0 and c.cache == CacheOutcome.BYPASS


async def test_embeddings_are_not_cached() -> None:
    stage, store = cache()
    c = call({"input": "hi"}, endpoint="embeddings")
    await serve(stage, c, FakeNext())
    assert c.cache == CacheOutcome.BYPASS and len(store) == 0
