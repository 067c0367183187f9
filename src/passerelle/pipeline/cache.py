"""The answer cache: a call answered before is answered again for nothing.

The stage asks each of its lookups in turn (``Lookup``: the exact one, ``ExactLookup``, finds an
entry by a key over every field that changes the answer, ``pipeline/cache_key.py``; another
strategy, such as a semantic one, is another ``Lookup`` after it) and serves the first entry found
(``pipeline/cached.py``): the call is a hit, metered at cost 0 with the cost of the call it
avoided as its saving, and nothing after the cache runs for it. Otherwise it watches the answer go
by, and once the answer is complete and successful (never an error, a cut stream, a refusal or a
content filter's stop) every lookup keeps it. ``x-passerelle-cache`` says ``hit`` or ``miss``
(a miss whatever the reason: not found, not looked up); the ledger's ``cache`` column says which
(``hit``, ``miss``, ``refresh`` for ``Cache-Control: no-cache``, ``bypass``).

Where it stands (``pipeline/chain.py``): after idempotency (a retried request replays its own
first answer) and before the budget: a hit costs nothing, so it reserves nothing, counts against
no budget or rate limit, and a tenant at its budget's end still gets the answers it already paid
for. A call the margin floor then moves to a cheaper model is kept under the route that answered
it, never under the one it asked for. The cache store being unreachable is a miss, and an answer
it cannot keep is only logged: the cache never fails a call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from passerelle.errors import StoreError
from passerelle.pipeline.cache_key import CachePolicy, Decision, decide, exact_key
from passerelle.pipeline.cached import CachedAnswer, Capture, serve
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pipeline.targets import Route
from passerelle.store.answers import AnswerStore
from passerelle.store.records import SavingSource

log = logging.getLogger("passerelle.cache")
HEADER = "x-passerelle-cache"


class Probe:
    """One lookup's look at one call: the entry it found, if any, and what it needs to keep the
    call's answer later (the exact lookup: the key; a semantic one would keep its embedding)."""

    __slots__ = ("found",)

    def __init__(self, found: CachedAnswer | None = None) -> None:
        self.found = found


class Lookup(Protocol):
    """A way of finding a stored answer for a call, and of keeping one."""

    name: str
    source: SavingSource  # what a hit through it saved by

    def applies(self, call: Call) -> bool:
        """Whether this lookup serves and keeps this call at all (beyond the stage's policy)."""
        ...

    async def probe(self, call: Call, *, read: bool) -> Probe:
        """Look (``read``) or only get ready to keep (``Cache-Control: no-cache``)."""
        ...

    async def keep(self, call: Call, probe: Probe, answer: CachedAnswer) -> None: ...


class ExactProbe(Probe):
    __slots__ = ("key", "route")

    def __init__(self, key: str, route: Route, found: CachedAnswer | None) -> None:
        super().__init__(found)
        self.key = key
        self.route = route


class ExactLookup:
    """Entries under a digest of the tenant, the route and every field that changes the answer."""

    name = "exact"
    source = SavingSource.CACHE_EXACT

    def __init__(self, store: AnswerStore, *, per_user: bool = False) -> None:
        self.store = store
        self._per_user = per_user

    def applies(self, call: Call) -> bool:
        return True

    async def probe(self, call: Call, *, read: bool) -> Probe:
        assert call.route is not None
        key = exact_key(call, per_user=self._per_user)
        found = None
        if read:
            raw = await self.store.get(key)
            found = CachedAnswer.loads(raw) if raw is not None else None
        return ExactProbe(key, call.route, found)

    async def keep(self, call: Call, probe: Probe, answer: CachedAnswer) -> None:
        assert isinstance(probe, ExactProbe) and call.route is not None
        key = probe.key
        if call.route is not probe.route:  # moved to another model: kept as that model's answer
            key = exact_key(call, per_user=self._per_user)
        await self.store.put(key, answer.dumps())


@dataclass(frozen=True, slots=True)
class _Watch:
    decision: Decision
    probes: list[tuple[Lookup, Probe]]
    capture: Capture


class Cache:
    def __init__(self, lookups: Sequence[Lookup], policy: CachePolicy) -> None:
        self._lookups = list(lookups)
        self._policy = policy

    async def __call__(self, call: Call, next: Next) -> None:
        decision = decide(call, self._policy)
        call.cache = decision.outcome
        call.response_headers[HEADER] = "miss"
        if not decision.look_up and not decision.keep:
            await next(call)
            return
        probes: list[tuple[Lookup, Probe]] = []
        for lookup in self._lookups:
            if not lookup.applies(call):
                continue
            try:
                probe = await lookup.probe(call, read=decision.look_up)
            except StoreError as exc:
                log.warning(
                    "%s: %s cache unreachable, a miss: %s", call.request_id, lookup.name, exc
                )
                continue
            found = probe.found
            if found is not None and found.tenant == call.tenant:
                serve(call, found, lookup.source)
                return
            probes.append((lookup, probe))
        if decision.keep and probes:
            watch = _Watch(decision, probes, Capture())
            call.observe(watch.capture)
            call.defer(lambda c: self._keep(c, watch))
        await next(call)

    async def _keep(self, call: Call, watch: _Watch) -> None:
        answer = watch.capture.answer(call, max_bytes=self._policy.max_entry_bytes)
        if answer is None:
            return
        for lookup, probe in watch.probes:
            try:
                await lookup.keep(call, probe, answer)
            except StoreError as exc:  # the answer is served; the next call is a miss
                log.warning("%s: answer not cached (%s): %s", call.request_id, lookup.name, exc)
