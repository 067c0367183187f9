"""The gateway: everything one running ``passerelle serve`` holds, built once from configuration.

This is where the pieces meet: the ledger, the key ring, the providers and their breakers, the
routing table, and the request chain in its order. Nothing here is global; the server gets one
``Gateway`` and passes it along.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from passerelle.config.load import Loaded
from passerelle.config.schema import Config, KeyConfig
from passerelle.economics.revenue import RevenueBook
from passerelle.errors import StoreError
from passerelle.limits.counters import Counters, LocalCounters
from passerelle.limits.periods import period_start
from passerelle.limits.rules import BudgetRule, Limits, build_limits, to_nano
from passerelle.pipeline.attempts import AttemptObserver, FailedAttemptRows
from passerelle.pipeline.audit import AuditTrail
from passerelle.pipeline.auth import Auth
from passerelle.pipeline.budget import Budget, OutputCeiling
from passerelle.pipeline.cache import Cache, ExactLookup, Lookup
from passerelle.pipeline.capture import Capture
from passerelle.pipeline.cascade import AnswerCheck, Cascade, HeuristicCheck
from passerelle.pipeline.chain import Next, Stage, build_chain
from passerelle.pipeline.conversation import Conversations
from passerelle.pipeline.dispatch import Dispatch
from passerelle.pipeline.idempotency import Idempotency
from passerelle.pipeline.inflight import InFlight, JournaledCounters
from passerelle.pipeline.margin import MarginFloor, tracking_rule
from passerelle.pipeline.meter import Meter
from passerelle.pipeline.parse import Parse
from passerelle.pipeline.policy import DataClassPolicy
from passerelle.pipeline.pseudonymise import personal_data_stage
from passerelle.pipeline.resolve import Pricer, Resolve
from passerelle.pipeline.route import RouteStage
from passerelle.pipeline.targets import Route
from passerelle.pricing.catalogue import Catalogue
from passerelle.provider_settings import provider_settings
from passerelle.providers.base import Provider
from passerelle.providers.factory import build_provider
from passerelle.providers.shared_breakers import Scripts
from passerelle.recovery import Recovered, record_interrupted, report, settle_interrupted
from passerelle.routing.router import LearnedRouter
from passerelle.sovereignty.classes import DataPolicy, data_policy
from passerelle.store.answers import AnswerStore, Bounds, LocalAnswers, RedisAnswers
from passerelle.store.audit import open_audit
from passerelle.store.audit_spool import AuditSpool
from passerelle.store.base import Ledger
from passerelle.store.conversations import (
    ConversationStore,
    LocalConversations,
    RedisConversations,
)
from passerelle.store.idempotency import IdempotencyStore, LocalIdempotency, RedisIdempotency
from passerelle.store.journal import Journal
from passerelle.store.ledgers import open_ledger
from passerelle.tenancy import KeyRing

if TYPE_CHECKING:
    from passerelle.pipeline.semantic import SemanticLookup
from passerelle.assembly import build_routes, load_routers, policy, semantic_cache

log = logging.getLogger("passerelle")
REVENUE_REFRESH_S = 30.0


@dataclass
class Gateway:
    config: Config
    admin_token: str | None
    ledger: Ledger
    keys: KeyRing
    providers: dict[str, Provider]
    routes: dict[str, Route]
    pricer: Pricer
    limits: Limits
    counters: Counters
    idempotency: IdempotencyStore
    revenue: RevenueBook
    journal: Journal | None = None
    # responses kept for ``previous_response_id`` and ``GET /v1/responses/{id}``; None: none kept
    conversations: ConversationStore | None = None
    breaker_state: Scripts | None = None  # with Redis: breakers shared by every replica
    answers: AnswerStore | None = None  # the exact cache's entries; None: no cache
    semantic: SemanticLookup | None = None  # the semantic cache, after the exact; None: off
    # see every outbound attempt start and end (audit, metrics, traces), after the ledger's rows
    attempt_observers: list[AttemptObserver] = field(default_factory=list)
    audit: AuditTrail | None = None  # the keyed trail of every attempt; one of the observers
    # the learned router of each `learned` route, loaded at start-up (``load_routers``)
    routers: dict[str, LearnedRouter] = field(default_factory=dict)
    chain: Next = field(init=False)
    pipeline: list[Stage] = field(init=False)  # the stages of ``chain``, in order (the exit drill)
    _refresher: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.pipeline = self.stages()
        self.chain = build_chain(self.pipeline)

    def stages(self) -> list[Stage]:
        """The request path, in order (see pipeline/chain.py for why this order)."""
        stages: list[Stage] = [
            Auth(self.keys),
            Parse(),
            Conversations(self.conversations),
            Resolve(self.routes),
            Meter(self.ledger, self.pricer, self.journal),
        ]
        if self.config.prompt_capture:  # opt-in: after the meter, so its row is written first
            stages.append(Capture(self.ledger, self.config.prompt_capture))
        stages.append(Idempotency(self.idempotency))
        data = self.data_policy()
        if data is not None and self.config.sovereignty is not None:
            stages.append(DataClassPolicy(data))
            # after the class is known, before the cache: no cache key holds personal data
            personal = personal_data_stage(data, self.config.sovereignty)
            if personal is not None:
                stages.append(personal)
        exact = self.config.cache.exact
        if exact is not None and self.answers is not None:
            lookups: list[Lookup] = [ExactLookup(self.answers, per_user=exact.per_user)]
            if self.semantic is not None:
                lookups.append(self.semantic)
            stages.append(Cache(lookups, policy(exact)))
        if self.config.routes:
            # before the budget: the reservation is for the model the route chose
            stages.append(
                RouteStage(
                    self.config.routes, self.routes, self.routers, self.pricer, self.revenue.plan
                )
            )
        floors = None
        if self.floor_tenants():
            plans = {p.name: p for p in self.config.plans}
            floors = MarginFloor(plans, self.revenue, self.routes)
        if self.limits.any or floors is not None:
            server = self.config.server
            ceiling = OutputCeiling(
                server.default_max_tokens_ceiling, server.max_tokens_above_ceiling == "refuse"
            )
            # the budget stage checks the margin floor in the same atomic admission
            stages.append(Budget(self.limits, self.counters, self.pricer, ceiling, floors))
        if self.journal is not None:
            stages.append(InFlight(self.journal))
        checks: dict[str, AnswerCheck] = {
            r.name: HeuristicCheck(r.cascade.min_chars)
            for r in self.config.routes
            if r.strategy == "cascade"
        }
        if checks:  # after the budget and the journal: every step is reserved and journaled
            stages.append(Cascade(self.routes, self.pricer, checks))
        stages.append(Dispatch([FailedAttemptRows(self.pricer), *self.attempt_observers]))
        return stages

    def data_policy(self) -> DataPolicy | None:
        sovereignty = self.config.sovereignty
        if sovereignty is None:
            return None
        return data_policy(
            {n: (c.allow, c.personal_data) for n, c in sovereignty.classes.items()},
            sovereignty.default_class,
            {t.name: t.data_class for t in self.config.tenants if t.data_class},
            sovereignty.features,
        )

    def floor_tenants(self) -> list[str]:
        floors = {p.name for p in self.config.plans if p.margin_floor is not None}
        return [t.name for t in self.config.tenants if t.plan in floors]

    @classmethod
    def from_config(
        cls,
        loaded: Loaded,
        *,
        ledger: Ledger | None = None,
        attempt_observers: Sequence[AttemptObserver] = (),
    ) -> Gateway:
        config = loaded.config
        data_dir = Path(config.ledger.data_dir)
        dead = config.ledger.dead_letters
        ledger = ledger or open_ledger(
            config.store,
            dead_letters=Path(dead) if dead else data_dir / "ledger-dead-letters.jsonl",
            unreachable_after_s=config.ledger.unreachable_after_s,
        )
        keys = KeyRing(lookup=ledger.find_key)
        for tenant in config.tenants:
            for ref in tenant.keys:
                ref_str = ref.key if isinstance(ref, KeyConfig) else ref
                name = ref.name if isinstance(ref, KeyConfig) else None
                secret = loaded.secrets.get(ref_str)
                assert secret is not None
                keys.add_secret(secret, tenant.name, name)
        providers = {
            p.name: build_provider(provider_settings(p, loaded.secrets)) for p in config.providers
        }
        breaker_state = Scripts(config.redis) if config.redis else None
        routes = build_routes(config, providers, breaker_state)
        limits = build_limits(config, dict(loaded.secrets.values))
        floors = {p.name for p in config.plans if p.margin_floor is not None}
        for t in config.tenants:
            if t.plan in floors:
                # the margin floor reads the month's cost from this counter; only budgets settle
                # counters, so a tenant with a floor and no budget still needs it among its budgets
                limits.tenant_budgets.setdefault(t.name, []).append((tracking_rule(t.name), None))
        counters: Counters
        idempotency: IdempotencyStore
        conversations: ConversationStore | None = None
        answers: AnswerStore | None = None
        exact = config.cache.exact
        bounds = (
            Bounds(ttl_s=exact.ttl_s, max_entries=exact.max_entries, max_bytes=exact.max_bytes)
            if exact is not None
            else None
        )
        server = config.server
        keeps = server.responses_retention_s > 0
        if config.redis:
            from passerelle.limits.redis_counters import RedisCounters
            from passerelle.store.redis import SharedState

            shared = SharedState(config.redis)
            counters = RedisCounters(shared, recorded_cost=partial(recorded_cost, ledger))
            idempotency = RedisIdempotency(shared)
            answers = RedisAnswers(shared, bounds) if bounds is not None else None
            if keeps:
                conversations = RedisConversations(
                    shared,
                    retention_s=server.responses_retention_s,
                    max_bytes=server.responses_max_bytes,
                )
        else:
            counters = LocalCounters()
            idempotency = LocalIdempotency(max_bytes=server.idempotency_max_bytes)
            answers = LocalAnswers(bounds) if bounds is not None else None
            if keeps:
                conversations = LocalConversations(
                    retention_s=server.responses_retention_s, max_bytes=server.responses_max_bytes
                )
        semantic = None
        if config.cache.semantic is not None and exact is not None:
            semantic = semantic_cache(config, shared if config.redis else None)
        journal = Journal(data_dir)
        audit = None
        if config.audit is not None:
            key = loaded.secrets.get(config.audit.key)
            assert key is not None  # resolved at load, or the load failed
            audit = AuditTrail(
                open_audit(config.store),
                key.encode(),
                spool=AuditSpool(data_dir),
                flush_every_s=config.audit.flush_every_s,
                checkpoint_every_s=config.audit.checkpoint_every_s,
            )
        return cls(
            config=config,
            admin_token=loaded.secrets.get(config.admin_token),
            ledger=ledger,
            keys=keys,
            providers=providers,
            routes=routes,
            pricer=Pricer(Catalogue.shipped()),
            limits=limits,
            counters=JournaledCounters(counters, journal),
            idempotency=idempotency,
            revenue=RevenueBook(config),
            journal=journal,
            conversations=conversations,
            breaker_state=breaker_state,
            answers=answers,
            semantic=semantic,
            attempt_observers=[*([audit] if audit else []), *attempt_observers],
            audit=audit,
            routers=load_routers(loaded),
        )

    async def seed(self, rule: BudgetRule, at: float) -> int:
        """What the ledger says a budget's scope has spent so far in its period."""
        since = period_start(rule.period, at)
        kind, _, rest = rule.scope.partition(":")
        rows = await self.ledger.usage(["tenant", "key", "feature"], since)
        total = Decimal(0)
        for r in rows:
            g = r.group
            if (
                (kind == "tenant" and g["tenant"] == rest)
                or (kind == "key" and g["key"] == rest)
                or (kind == "feature" and f"{g['tenant']}:{g['feature']}" == rest)
            ):
                total += r.cost_usd
        return to_nano(total)

    def unpriced_targets(self, at: float) -> list[str]:
        """Targets with no price in the configuration nor the catalogue today."""
        return sorted(
            {
                t.label
                for r in self.routes.values()
                for t in r.targets
                if self.pricer.price(t, at) is None
            }
        )

    async def start(self) -> None:
        unpriced = self.unpriced_targets(time.time())
        if unpriced:
            log.warning(
                "no price known for %s: their calls are recorded as unpriced (cost unknown, "
                "never $0); set `price` on these targets",
                ", ".join(unpriced),
            )
        await self.ledger.start()
        if self.audit is not None:
            await self.audit.start()
        if self.semantic is not None:  # with Redis: the shared entries, then their feed
            await self.semantic.start()
        self.revenue.replace_recorded(await self.ledger.list_revenue())
        self._refresher = asyncio.create_task(self._refresh_revenue(), name="revenue-refresh")
        # calls a dead process left in flight: their rows before the counters are seeded from
        # the ledger, their reservations settled after (recovery.py says why)
        recovered = await self._recover_rows()
        rules = self.limits.all_budgets() + [tracking_rule(t) for t in self.floor_tenants()]
        await self.counters.start(rules, self.seed)
        if self.journal is not None:
            if recovered is not None:
                settled = await settle_interrupted(self.counters, self.limits, recovered)
                report(recovered, settled)
                self.journal.forget_taken()
            try:
                self.journal.open()
            except OSError as exc:
                raise StoreError(f"cannot open the journal {self.journal.path}: {exc}") from exc
        for provider in self.providers.values():
            await provider.load()

    async def _recover_rows(self) -> list[Recovered] | None:
        """Rows for the calls in flight in dead processes' journals; None when there were none
        or the ledger failed (the journals are then kept for the next start)."""
        if self.journal is None:
            return None
        try:
            found = self.journal.take_over()
        except OSError as exc:
            raise StoreError(
                f"cannot use the journal directory {self.journal.directory}: {exc}; "
                "set ledger.data_dir to a writable directory"
            ) from exc
        if not found:
            self.journal.forget_taken()
            return None
        try:
            return await record_interrupted(self.ledger, found)
        except StoreError as exc:
            log.error("calls left in flight could not be recorded (%s); kept for next start", exc)
            return None

    async def _refresh_revenue(self) -> None:
        """Revenue imported by the CLI or another replica reaches this one within a minute."""
        while True:
            await asyncio.sleep(REVENUE_REFRESH_S)
            try:
                self.revenue.replace_recorded(await self.ledger.list_revenue())
            except StoreError as exc:
                log.warning("revenue refresh failed: %s", exc)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        for provider in self.providers.values():
            await provider.aclose()
        await self.counters.close()
        if self.breaker_state is not None:
            await self.breaker_state.close()
        await self.idempotency.close()
        if self.conversations is not None:
            await self.conversations.close()
        if self.answers is not None:
            await self.answers.close()
        if self.semantic is not None:
            await self.semantic.close()
        await self.ledger.close()
        if self.audit is not None:
            await self.audit.close()
        if self.journal is not None:
            self.journal.close()


async def recorded_cost(ledger: Ledger, request_id: str) -> int | None:
    """What the ledger holds for one call (all its attempts), or None when it holds no row: a
    budget correction leaves out calls still to be settled."""
    rows = await ledger.records(request_id)
    if not rows:
        return None
    return to_nano(sum((r.cost_usd or Decimal(0) for r in rows), Decimal(0)))
