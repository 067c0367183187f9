"""Which budgets and rate limits apply to a call, from the configuration, as plain values.

A budget's *scope* names what it limits: ``tenant:acme``, ``key:key_ab12…``,
``feature:acme:summarize``. Counters are kept per scope and period in nano-dollars (1e-9 USD),
integers exact up to nine million dollars in Redis' Lua as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from passerelle.config.schema import BudgetConfig, Config, KeyConfig, RateLimitConfig
from passerelle.limits.periods import period_id, seconds_left
from passerelle.tenancy import key_digest, key_id_for

NANO = Decimal("1e9")


def to_nano(usd: Decimal, *, up: bool = False) -> int:
    return int((usd * NANO).quantize(Decimal(1), rounding=ROUND_CEILING if up else ROUND_HALF_UP))


def from_nano(n: int) -> Decimal:
    return Decimal(n) / NANO


@dataclass(frozen=True, slots=True)
class BudgetRule:
    scope: str
    label: str  # for messages: "tenant acme", "feature summarize of tenant acme"
    usd: Decimal
    period: str
    hard: bool

    @property
    def kind_label(self) -> str:
        return "hard" if self.hard else "soft"

    @property
    def limit_nano(self) -> int:
        return to_nano(self.usd)

    def counter(self, at: float) -> str:
        return f"{self.scope}:{self.period}:{period_id(self.period, at)}"

    def ttl(self, at: float) -> int:
        return seconds_left(self.period, at) + 86400


@dataclass(frozen=True, slots=True)
class RateRule:
    scope: str
    label: str
    kind: str  # rpm | tpm
    limit: int

    @property
    def counter(self) -> str:
        return f"{self.scope}:{self.kind}"


@dataclass(frozen=True)
class Limits:
    tenant_budgets: dict[str, list[tuple[BudgetRule, str | None]]]  # rule, feature or None
    key_budgets: dict[str, list[BudgetRule]]
    tenant_rates: dict[str, list[RateRule]]
    key_rates: dict[str, list[RateRule]]

    def budgets_for(self, tenant: str, key_id: str | None, feature: str | None) -> list[BudgetRule]:
        rules = [r for r, f in self.tenant_budgets.get(tenant, ()) if f is None or f == feature]
        if key_id is not None:
            rules.extend(self.key_budgets.get(key_id, ()))
        return rules

    def rates_for(self, tenant: str, key_id: str | None) -> list[RateRule]:
        rules = list(self.tenant_rates.get(tenant, ()))
        if key_id is not None:
            rules.extend(self.key_rates.get(key_id, ()))
        return rules

    @property
    def any(self) -> bool:
        return bool(self.tenant_budgets or self.key_budgets or self.tenant_rates or self.key_rates)

    def all_budgets(self) -> list[BudgetRule]:
        rules = [r for lst in self.tenant_budgets.values() for r, _ in lst]
        return rules + [r for lst in self.key_budgets.values() for r in lst]


def _budget(
    b: BudgetConfig, tenant: str, key_id: str | None = None
) -> tuple[BudgetRule, str | None]:
    if key_id is not None:
        scope, label = f"key:{key_id}", f"key {key_id}"
    elif b.feature is not None:
        scope, label = f"feature:{tenant}:{b.feature}", f"feature {b.feature} of tenant {tenant}"
    else:
        scope, label = f"tenant:{tenant}", f"tenant {tenant}"
    return BudgetRule(
        scope=scope, label=label, usd=b.usd, period=b.period, hard=b.kind == "hard"
    ), b.feature


def _rates(rl: RateLimitConfig | None, scope: str, label: str) -> list[RateRule]:
    if rl is None:
        return []
    rules = []
    if rl.rpm:
        rules.append(RateRule(scope=scope, label=label, kind="rpm", limit=rl.rpm))
    if rl.tpm:
        rules.append(RateRule(scope=scope, label=label, kind="tpm", limit=rl.tpm))
    return rules


def build_limits(config: Config, secrets: dict[str, str]) -> Limits:
    tenant_budgets: dict[str, list[tuple[BudgetRule, str | None]]] = {}
    key_budgets: dict[str, list[BudgetRule]] = {}
    tenant_rates: dict[str, list[RateRule]] = {}
    key_rates: dict[str, list[RateRule]] = {}
    for t in config.tenants:
        if t.budgets:
            tenant_budgets[t.name] = [_budget(b, t.name) for b in t.budgets]
        if t.rate_limits:
            tenant_rates[t.name] = _rates(t.rate_limits, f"tenant:{t.name}", f"tenant {t.name}")
        for k in t.keys:
            if not isinstance(k, KeyConfig):
                continue
            key_id = key_id_for(key_digest(secrets[k.key]))
            if k.budgets:
                key_budgets[key_id] = [_budget(b, t.name, key_id)[0] for b in k.budgets]
            if k.rate_limits:
                key_rates[key_id] = _rates(k.rate_limits, f"key:{key_id}", f"key {key_id}")
    return Limits(tenant_budgets, key_budgets, tenant_rates, key_rates)
