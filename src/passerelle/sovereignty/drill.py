"""The exit drill: what would break, and what would move, if one provider disappeared tomorrow.

Computed from the configuration (``Topology``) and the ledger's usage over a period, nothing
sent: a model whose every target is at the provider is *broken*; one whose first target is
there *moves* to its next target at another provider (with the price difference when both
prices are known, per million input and output tokens); one that keeps its first target but
had a fallback there *loses a fallback*. A route is broken when all its models are. A data class
is *stranded* for a model when the provider held every target it may reach, and stranded
everywhere when no remaining provider of any model admits it. The features and tenants that
called broken models (or routes) over the period are listed with how much of their traffic
that was, in requests and in spend, and how much the provider itself served them.

The live part (``LiveResult``: a sample of synthetic calls sent through the remaining targets)
is run by the gateway (``pipeline/drill.py``) and joined to this report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from passerelle.errors import InvalidRequestError
from passerelle.pricing.catalogue import Price
from passerelle.pricing.cost import usd_exact
from passerelle.sovereignty.independence import TargetInfo, Topology
from passerelle.store.records import UsageRow

DRILL_FEATURE = "exit-drill"  # the feature the live drill's calls are metered under


class UnknownProviderError(InvalidRequestError):
    """The drill named a provider the configuration does not have."""

    code = "unknown_provider"


def check_provider(topo: Topology, provider: str) -> None:
    if provider not in topo.jurisdictions:
        known = ", ".join(sorted(topo.jurisdictions)) or "none"
        raise UnknownProviderError(
            f"unknown provider {provider[:64]!r}; the configuration has: {known}",
            param="without",
        )


@dataclass(frozen=True, slots=True)
class LiveResult:
    """One synthetic call of the live drill."""

    model: str
    ok: bool
    latency_ms: float
    target: str | None = None  # provider/upstream_model that answered (or was tried last)
    error: str | None = None
    request_id: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "status": "ok" if self.ok else "failed",
            "latency_ms": round(self.latency_ms, 1),
            "target": self.target,
            "error": self.error,
            "request_id": self.request_id,
        }


def _price_change(before: Price | None, after: Price | None) -> dict[str, str] | None:
    if before is None or after is None:
        return None
    return {
        "input_per_mtok_usd": usd_exact(after.input - before.input),
        "output_per_mtok_usd": usd_exact(after.output - before.output),
    }


def _label(t: TargetInfo) -> str:
    return f"{t.provider}/{t.upstream_model}"


def model_effects(topo: Topology, provider: str) -> list[dict[str, object]]:
    """Every model the provider serves, and what becomes of it without it."""
    out: list[dict[str, object]] = []
    for model, targets in sorted(topo.models.items()):
        if not any(t.provider == provider for t in targets):
            continue
        left = [t for t in targets if t.provider != provider]
        stranded = [
            c.name
            for c in topo.restricted()
            if any(t.admitted_by(c) for t in targets) and not any(t.admitted_by(c) for t in left)
        ]
        effect: dict[str, object] = {"model": model, "classes_stranded": stranded}
        if not left:
            effect.update(effect="broken", to=None, price_change=None)
        elif targets[0].provider == provider:
            effect.update(
                effect="moves",
                to=_label(left[0]),
                price_change=_price_change(targets[0].price, left[0].price),
            )
        else:
            effect.update(effect="loses_fallback", to=_label(left[0]), price_change=None)
        out.append(effect)
    return out


def stranded_classes(topo: Topology, provider: str) -> list[str]:
    """Data classes that some model can serve today and no model could serve without it."""
    classes = [] if topo.policy is None else list(topo.policy.classes.values())
    every = [t for targets in topo.models.values() for t in targets]
    left = [t for t in every if t.provider != provider]
    return [
        c.name
        for c in classes
        if any(t.admitted_by(c) for t in every) and not any(t.admitted_by(c) for t in left)
    ]


def _exposure(
    rows: Sequence[UsageRow], column: str, broken: set[str], provider: str
) -> list[dict[str, object]]:
    """Per feature (or tenant) that called a broken model or the provider: its traffic, what of
    it the drill breaks and what the provider served."""
    totals: dict[str | None, list[Decimal]] = {}
    for r in rows:
        key = r.group.get(column)
        t = totals.setdefault(key, [Decimal(0)] * 6)
        hit_broken = r.group.get("model") in broken
        at_provider = r.group.get("provider") == provider
        for i, flag in ((0, True), (2, hit_broken), (4, at_provider)):
            if flag:
                t[i] += r.requests
                t[i + 1] += r.cost_usd
    out: list[dict[str, object]] = []
    for key, (req, cost, b_req, b_cost, p_req, p_cost) in totals.items():
        if not b_req and not b_cost and not p_req and not p_cost:
            continue
        out.append(
            {
                column: key,
                "requests": int(req),
                "cost_usd": usd_exact(cost),
                "broken_requests": int(b_req),
                "broken_requests_share": float(b_req / req) if req else None,
                "broken_cost_usd": usd_exact(b_cost),
                "broken_spend_share": float(b_cost / cost) if cost else None,
                "provider_requests": int(p_req),
                "provider_requests_share": float(p_req / req) if req else None,
                "provider_cost_usd": usd_exact(p_cost),
                "provider_spend_share": float(p_cost / cost) if cost else None,
            }
        )
    out.sort(key=lambda e: (-int(str(e["broken_requests"])), -int(str(e["provider_requests"]))))
    return out


def drill(
    topo: Topology,
    provider: str,
    rows: Sequence[UsageRow],
    *,
    since: str | None,
    until: str | None,
    live: Sequence[LiveResult] | None = None,
) -> dict[str, object]:
    """The exit drill's report for ``provider`` (``check_provider`` first), as the admin API
    answers it and the command prints it; ``live``: the synthetic calls' results, if any ran."""
    check_provider(topo, provider)
    models = model_effects(topo, provider)
    broken = {str(m["model"]) for m in models if m["effect"] == "broken"}
    routes = [
        {"route": r, "effect": "broken" if all(m in broken for m in ms) else "degraded"}
        for r, ms in sorted(topo.routes.items())
        if any(m in broken for m in ms)
    ]
    broken |= {str(r["route"]) for r in routes if r["effect"] == "broken"}
    report: dict[str, object] = {
        "object": "drill",
        "without": provider,
        "jurisdiction": topo.jurisdiction(provider),
        "since": since,
        "until": until,
        "broken_models": sorted(m for m in broken if m in topo.models),
        "models": models,
        "routes": routes,
        "classes_stranded": stranded_classes(topo, provider),
        "features": _exposure(rows, "feature", broken, provider),
        "tenants": _exposure(rows, "tenant", broken, provider),
        "live": None if live is None else [r.as_json() for r in live],
    }
    if live is not None:
        report["live_ok"] = all(r.ok for r in live)
    return report
