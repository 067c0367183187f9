"""``Call``: everything the pipeline knows about one request, as one value.

Stages read and fill it in order; none keeps per-request state of its own. A stage that must see
or rewrite the answer registers, on its way in, an ``AnswerObserver`` (``observe``) or an
``AnswerTransformer`` (``transform``): the answer flows back through them innermost first, plain
or streamed alike (``pipeline/answer.py``). Work that must happen when the answer is complete
(metering, settling a reservation) is registered with ``defer`` and run by ``finish``, once, in
registration order, after the last content byte and before the response is closed: a response
the client received whole is already in the ledger.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from passerelle.errors import APIError, ProviderError
from passerelle.pipeline.targets import Eligible, Filter, NoEligibleTargetError, Route, Target
from passerelle.protocol.base import OPENAI, Dialect
from passerelle.providers.base import Completion, Embeddings, StreamChunk, Usage
from passerelle.sovereignty.classes import DataClass
from passerelle.store.records import CacheOutcome, SavingSource, Status
from passerelle.tenancy import ApiKey

Deferred = Callable[["Call"], Awaitable[None]]


def new_request_id() -> str:
    """Time-ordered (ledger inserts land at the end of the key's index), unique in practice."""
    return f"req_{time.time_ns():016x}{random.getrandbits(64):016x}"


@dataclass(slots=True)
class ChunkStream:
    """A stream as dispatch hands it over: its first event has arrived (so retries are over).

    Only the answer path reads it, as one sequence of events; stages never do."""

    first: StreamChunk
    rest: AsyncGenerator[StreamChunk, None]  # a provider's stream: closing it frees the upstream
    drain_on_disconnect: bool = True
    # the attempt that produced it ends here: told "ok" after the last event was read, the
    # failure that cut it, or "cancelled" when it is closed before its end
    on_end: Callable[[str | ProviderError], None] | None = None

    def ended(self, outcome: str | ProviderError) -> None:
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end(outcome)

    async def aclose(self) -> None:
        try:
            await self.rest.aclose()
        finally:
            self.ended("cancelled")


class AnswerObserver:
    """Sees the answer as it passes, rewrites nothing: a completion's body, or every stream event
    (the usage-only events a client did not ask for too). The defaults see nothing."""

    def body(self, call: Call, body: bytes) -> None:
        return None

    def event(self, call: Call, chunk: StreamChunk) -> None:
        return None


class AnswerTransformer:
    """May rewrite the answer: a completion's body, and each stream event into any number of
    events (none holds it back, to handle a value split across events; ``flush`` hands back what
    is held once the stream has ended). It keeps ``usage``, ``forward`` and ``content_chars`` of
    what it rewrites true; batching (``more``) is the answer path's. The defaults change nothing."""

    def body(self, call: Call, body: bytes) -> bytes:
        return body

    def event(self, call: Call, chunk: StreamChunk) -> list[StreamChunk]:
        return [chunk]

    def flush(self, call: Call) -> list[StreamChunk]:
        return []


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """An upstream attempt that failed and was retried or failed over: a ledger row of its own,
    since the upstream may bill it (a timeout is not a refusal)."""

    n: int
    provider: str
    upstream_model: str
    error_code: str
    latency_ms: float
    # an answer that arrived but was not served (a cascade's check failed it): billed as it came
    usage: Usage | None = None
    cost_usd: Decimal | None = Decimal(0)  # None: its target has no known price


@dataclass(frozen=True, slots=True)
class Routed:
    """What a route chose for the call (``pipeline/route.py``): the model, why (``code`` for the
    header, ``reason`` for the ledger), the target the saving is measured against (the route's
    default model), and for a cascade its steps: each step's model and its usable targets, cheapest
    first."""

    route: str
    model: str
    code: str
    reason: str
    baseline: Target | None = None
    steps: tuple[tuple[str, tuple[Target, ...]], ...] = ()

    def header(self) -> str:
        return f"{self.model}; reason={self.code}"


@dataclass(slots=True)
class Call:
    endpoint: str  # "chat.completions" | "completions" | "embeddings" | a dialect ("messages")
    headers: Mapping[str, str]
    raw_body: bytes
    # the wire format the client speaks: its errors and answers are rendered in it
    dialect: Dialect = OPENAI
    request_id: str = field(default_factory=lambda: new_request_id())
    received_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    # auth
    key: ApiKey | None = None
    # parse
    body: dict[str, Any] = field(default_factory=dict)  # the canonical (OpenAI chat) body
    native_body: dict[str, Any] | None = None  # the client's own body, for another dialect
    model: str | None = None
    feature: str | None = None
    user: str | None = None
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    data_class: DataClass | None = None  # set by the data-class policy, when there is one
    # personal data replaced before it left: entity type -> values (never the values themselves)
    pseudonymised: dict[str, int] = field(default_factory=dict)
    # resolve / dispatch
    route: Route | None = None  # set with ``resolved``, changed with ``reroute``
    routed: Routed | None = None  # a route's choice of model, when the call asked for a route
    eligible: Eligible = field(default_factory=Eligible)  # the targets it may use, and why
    target: Target | None = None  # the target that answered (or was tried last)
    native: bool = False  # it answered in the call's dialect itself: nothing to translate
    attempts: int = 0
    failed_attempts: list[FailedAttempt] = field(default_factory=list)
    result: Completion | Embeddings | ChunkStream | None = None
    first_token_at: float | None = None
    # what the answer showed the meter (its observer counts a stream's events as they pass)
    chunks: int = 0
    content_chars: int = 0
    usage: Usage | None = None
    # outcome
    status: Status = Status.OK
    error: APIError | None = None
    cost_usd: Decimal | None = None
    # what the call did not cost and why (a cache hit saves the whole call), and the cache's say
    saved_usd: Decimal = Decimal(0)
    saving_source: SavingSource | None = None
    cache: CacheOutcome | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    # the answer path, in chain order (the answer flows through it from the end)
    answer_path: list[AnswerObserver | AnswerTransformer] = field(default_factory=list)
    transforms_answer: bool = False
    _deferred: list[Deferred] = field(default_factory=list)
    _finished: bool = False

    @property
    def tenant(self) -> str | None:
        return self.key.tenant if self.key else None

    @property
    def targets(self) -> tuple[Target, ...]:
        """The targets this call may use, in order: its route's, less what filters removed."""
        return self.eligible.targets

    def resolved(self, route: Route) -> None:
        """The call's route, as resolution found it (no filter applied yet)."""
        self.route = route
        self.eligible.reset(route)

    def narrow(
        self,
        reason: str,
        keep: Callable[[Target], bool],
        refusal: type[APIError] = NoEligibleTargetError,
        param: str | None = None,
    ) -> None:
        """Keep only the targets ``keep`` accepts, for the rest of the call and for any route it
        is moved to; ``reason`` names the filter in the refusal (``refusal``, 400 by default,
        with ``param``: the request field that asked for it) when none is left."""
        assert self.route is not None, "narrowed before resolution"
        self.eligible.narrow(Filter(reason, keep, refusal, param), self.route.model)

    def reroute(self, route: Route) -> None:
        """Move the call to another route; every filter applied so far applies to its targets
        (a call refused there is refused, not sent where a filter forbade)."""
        self.route = route
        self.eligible.reset(route)

    def defer(self, fn: Deferred) -> None:
        self._deferred.append(fn)

    def observe(self, observer: AnswerObserver) -> None:
        """See the answer where this stage stands in the chain (call it on the way in)."""
        self.answer_path.append(observer)

    def transform(self, transformer: AnswerTransformer) -> None:
        """Rewrite the answer where this stage stands in the chain (call it on the way in)."""
        self.answer_path.append(transformer)
        self.transforms_answer = True

    def annotate(self, decision: str) -> None:
        """Note a policy decision (soft budget, degradation...); the ledger keeps it."""
        seen = self.annotations.get("decision")
        self.annotations["decision"] = decision if not seen else f"{seen}; {decision}"

    def fail(self, error: APIError) -> None:
        self.status = Status.ERROR
        self.error = error

    async def finish(self) -> None:
        """Run the deferred work once, in the order it was registered (the meter, which prices
        the call, runs before the budget settles it). Every piece runs even if one fails; the
        first failure is raised afterwards."""
        if self._finished:
            return
        self._finished = True
        first: BaseException | None = None
        for fn in self._deferred:
            try:
                await fn(self)
            except Exception as exc:
                first = first or exc
        self._deferred.clear()
        if first is not None:
            raise first

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.started) * 1000.0
