"""The independence report: how much of the traffic depends on each provider and jurisdiction,
and which models could carry on without one.

Two sources, both read-only. The ledger says where the traffic went: its usage rows, grouped by
provider, model, feature and tenant (the ledger's own ``usage`` query, the same on SQLite and
PostgreSQL), are folded here into shares of requests, tokens (input + output) and spend per
provider and per jurisdiction, overall and per feature. A request counts where it was answered
(a failed attempt adds its tokens and spend to the provider that billed it, never a request);
calls no provider saw (cache hits, refusals) are counted apart as ``not_sent``; spend shares are
of the priced spend (unpriced calls are counted, never taken as $0).

The configuration says what could go elsewhere (``Topology``): each model's targets, their
providers and jurisdictions, and the data-class policy. A model has a fallback outside a
provider when one of its targets is at another provider; a data class that narrows the targets
can take that away: a model whose only target ``confidential`` may reach is at one provider has
no fallback for confidential calls, even if it has a US target for the rest.

Concentration is the Herfindahl-Hirschman index: the sum of the squared percentage shares, from
near 0 (spread over many) to 10,000 (one provider takes everything). The usual reading (the
competition authorities' thresholds): under 1,500 unconcentrated, 1,500 to 2,500 moderately
concentrated, over 2,500 highly concentrated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from passerelle.config.schema import Config
from passerelle.pricing.catalogue import Catalogue, Price, configured_price
from passerelle.pricing.cost import usd_exact
from passerelle.sovereignty.classes import DataClass, DataPolicy, data_policy
from passerelle.store.records import UsageRow

UNKNOWN = "unknown"  # the jurisdiction of a provider that declares none (or is gone)
HHI_SCALE = (
    "Herfindahl-Hirschman index, 0 to 10000 (the sum of squared percentage shares): under 1500 "
    "unconcentrated, 1500 to 2500 moderately concentrated, over 2500 highly concentrated"
)
REPORT_GROUPS = ["provider", "model", "feature", "tenant"]  # the ledger grouping both reports read


@dataclass(frozen=True, slots=True)
class TargetInfo:
    provider: str
    upstream_model: str
    jurisdiction: str | None
    price: Price | None  # configured, else the catalogue's for the day; None: unpriced

    def admitted_by(self, data_class: DataClass) -> bool:
        return data_class.admits(self.provider, self.jurisdiction)


@dataclass(frozen=True, slots=True)
class Topology:
    """What the configuration says could serve what."""

    jurisdictions: Mapping[str, str | None]  # provider -> jurisdiction
    models: Mapping[str, tuple[TargetInfo, ...]]  # model -> its targets, in order
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # route -> its models
    policy: DataPolicy | None = None

    def jurisdiction(self, provider: str | None) -> str:
        return (self.jurisdictions.get(provider) if provider else None) or UNKNOWN

    def restricted(self) -> list[DataClass]:
        """The data classes that narrow targets (``any`` narrows nothing)."""
        if self.policy is None:
            return []
        return [c for c in self.policy.classes.values() if not c.unrestricted]


def policy_of(config: Config) -> DataPolicy | None:
    """The data-class policy the gateway applies, from the same configured values."""
    s = config.sovereignty
    if s is None:
        return None
    return data_policy(
        {n: (c.allow, c.personal_data) for n, c in s.classes.items()},
        s.default_class,
        {t.name: t.data_class for t in config.tenants if t.data_class},
        s.features,
    )


def topology(config: Config, catalogue: Catalogue, on: date) -> Topology:
    by_name = {p.name: p for p in config.providers}
    # an engine in the gateway's own process is self-hosted by definition (as routing has it)
    jurisdictions = {
        p.name: p.jurisdiction or ("self-hosted" if p.kind == "local" else None)
        for p in config.providers
    }
    models: dict[str, tuple[TargetInfo, ...]] = {}
    for m in config.models:
        targets = []
        for t in m.targets:
            upstream = t.upstream_model or m.name
            price = (
                configured_price(
                    t.price.input, t.price.output, t.price.cached_input, t.price.cache_write
                )
                if t.price is not None
                else catalogue.lookup(upstream, on)
            )
            assert t.provider in by_name  # the schema checks every target's provider
            targets.append(TargetInfo(t.provider, upstream, jurisdictions[t.provider], price))
        models[m.name] = tuple(targets)
    routes = {r.name: tuple(r.models) for r in config.routes}
    return Topology(jurisdictions, models, routes, policy_of(config))


@dataclass(slots=True)
class Share:
    """Requests, tokens and spend of one provider or jurisdiction, against a whole."""

    name: str
    requests: int = 0
    tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_requests: int = 0

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.tokens += row.input_tokens + row.output_tokens
        self.cost_usd += row.cost_usd
        self.unpriced_requests += row.unpriced_requests


def _ratio(part: int | Decimal, whole: int | Decimal) -> float | None:
    return float(part) / float(whole) if whole else None


def hhi(values: Iterable[int | Decimal]) -> int | None:
    """The Herfindahl-Hirschman index of these amounts (0..10000), None when they sum to 0."""
    amounts = [Decimal(v) for v in values]
    total = sum(amounts, Decimal(0))
    if not total:
        return None
    return round(sum(((a * 100 / total) ** 2 for a in amounts), Decimal(0)))


def reading(index: int | None) -> str | None:
    if index is None:
        return None
    if index < 1500:
        return "unconcentrated"
    return "moderately concentrated" if index <= 2500 else "highly concentrated"


@dataclass(slots=True)
class Breakdown:
    """One scope (everything, or one feature): its shares by provider and by jurisdiction."""

    providers: dict[str, Share] = field(default_factory=dict)
    jurisdictions: dict[str, Share] = field(default_factory=dict)
    not_sent: int = 0  # requests no provider saw: cache hits, refusals

    def add(self, row: UsageRow, jurisdiction: str) -> None:
        provider = row.group.get("provider")
        if provider is None:
            self.not_sent += row.requests
            return
        self.providers.setdefault(provider, Share(provider)).add(row)
        self.jurisdictions.setdefault(jurisdiction, Share(jurisdiction)).add(row)

    def total(self) -> Share:
        whole = Share("total")
        for s in self.providers.values():
            whole.requests += s.requests
            whole.tokens += s.tokens
            whole.cost_usd += s.cost_usd
            whole.unpriced_requests += s.unpriced_requests
        return whole

    def _shares(
        self, shares: Mapping[str, Share], jurisdiction: Mapping[str, str] | None
    ) -> list[dict[str, object]]:
        whole = self.total()
        rows = sorted(shares.values(), key=lambda s: (-s.cost_usd, -s.requests, s.name))
        out: list[dict[str, object]] = []
        for s in rows:
            item: dict[str, object] = {"name": s.name}
            if jurisdiction is not None:
                item["jurisdiction"] = jurisdiction[s.name]
            item.update(
                requests=s.requests,
                requests_share=_ratio(s.requests, whole.requests),
                tokens=s.tokens,
                tokens_share=_ratio(s.tokens, whole.tokens),
                cost_usd=usd_exact(s.cost_usd),
                spend_share=_ratio(s.cost_usd, whole.cost_usd),
                unpriced_requests=s.unpriced_requests,
            )
            out.append(item)
        return out

    def as_json(self, jurisdiction: Mapping[str, str]) -> dict[str, object]:
        whole = self.total()
        concentration = {}
        for scope, shares in (("provider", self.providers), ("jurisdiction", self.jurisdictions)):
            on_requests = hhi(s.requests for s in shares.values())
            on_spend = hhi(s.cost_usd for s in shares.values())
            concentration[scope] = {
                "requests_hhi": on_requests,
                "requests_reading": reading(on_requests),
                "spend_hhi": on_spend,
                "spend_reading": reading(on_spend),
            }
        return {
            "totals": {
                "requests": whole.requests,
                "tokens": whole.tokens,
                "cost_usd": usd_exact(whole.cost_usd),
                "unpriced_requests": whole.unpriced_requests,
                "not_sent": self.not_sent,
            },
            "providers": self._shares(self.providers, jurisdiction),
            "jurisdictions": self._shares(self.jurisdictions, None),
            "concentration": concentration,
        }


def fallbacks(topo: Topology) -> list[dict[str, object]]:
    """For each model and each provider it uses: where its calls could go without that provider,
    and the data classes that would be left nowhere to go (while they can reach it today)."""
    out: list[dict[str, object]] = []
    for model, targets in sorted(topo.models.items()):
        providers = list(dict.fromkeys(t.provider for t in targets))
        unserved = [c.name for c in topo.restricted() if not any(t.admitted_by(c) for t in targets)]
        without = []
        for p in providers:
            others = [t for t in targets if t.provider != p]
            stranded = [
                c.name
                for c in topo.restricted()
                if any(t.admitted_by(c) for t in targets if t.provider == p)
                and not any(t.admitted_by(c) for t in others)
            ]
            without.append(
                {
                    "provider": p,
                    "fallback": bool(others),
                    "to": list(dict.fromkeys(t.provider for t in others)),
                    "classes_without_fallback": stranded,
                }
            )
        out.append(
            {
                "model": model,
                "providers": providers,
                "classes_unserved": unserved,
                "without": without,
            }
        )
    return out


def independence(
    topo: Topology, rows: Sequence[UsageRow], *, since: str | None, until: str | None
) -> dict[str, object]:
    """The whole report, as the admin API answers it and the command prints it."""
    overall = Breakdown()
    features: dict[str | None, Breakdown] = {}
    jurisdiction: dict[str, str] = {}
    for row in rows:
        provider = row.group.get("provider")
        j = topo.jurisdiction(provider)
        if provider is not None:
            jurisdiction[provider] = j
        overall.add(row, j)
        features.setdefault(row.group.get("feature"), Breakdown()).add(row, j)
    ordered = sorted(features.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))
    return {
        "object": "independence",
        "since": since,
        "until": until,
        "hhi_scale": HHI_SCALE,
        **overall.as_json(jurisdiction),
        "features": [{"feature": f, **b.as_json(jurisdiction)} for f, b in ordered],
        "fallbacks": fallbacks(topo),
    }
