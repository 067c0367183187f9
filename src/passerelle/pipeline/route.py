"""Routing: a call that asked for a route (``auto``) is moved to one of the route's models.

A route (``routes:`` in the configuration, ``config/routing.py``) resolves like a model: its
``Route`` holds every target of its models, so resolution applies the capability filters to
them all. This stage then picks one model and moves the call there with ``call.reroute``, the
margin floor's own mechanism: every filter recorded so far (capabilities, policy) applies to
the chosen model's targets, so no strategy can reach a target a filter excluded. Only models
with an admitted target whose breaker is closed and that is not cooling are candidates: a
router never chooses a model that dispatch would refuse or skip. It runs before the budget,
so the reservation is the chosen model's worst case, and a margin floor degrades from there.

Strategies (``docs/routing.md``):

- ``rules``: the first rule whose conditions all hold (feature, tenant, plan, declared data class,
  prompt length) chooses its model;
- ``learned``: the router trained on outcomes (``routing/``) predicts each candidate's quality
  and cost for this prompt, and takes the best quality less a cost weight; the weight is the
  largest that kept ``quality_target`` of the best model's quality on the prompts held out at
  training (``routing/calibrate.py``). With ``max_cost_usd``: the best predicted model whose
  predicted cost fits under it;
- ``cascade``: the candidates, cheapest first, are the call's steps; ``pipeline/cascade.py``
  serves the first and escalates while a check of the answer fails. A streamed call cannot be
  checked before it reaches the client: it goes to the default.

When the strategy cannot decide (no rule holds, a prompt unlike the router's training, no
candidate it knows) the route's ``default`` serves, or the first candidate if the default has
none left. The choice is the header ``x-passerelle-route: <model>; reason=<code>`` and, with the
detailed reason, the ledger's ``routed_to`` and ``route_reason`` columns; the meter prices the
same usage at the default model's first eligible target for ``route_saved_pusd``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from passerelle.config.routing import RouteConfig, RuleConfig
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call, Routed
from passerelle.pipeline.resolve import Pricer
from passerelle.pipeline.targets import Route, Target
from passerelle.pricing.estimate import estimate_prompt_tokens
from passerelle.routing.router import LearnedRouter, choose

DATA_CLASS_HEADER = "x-passerelle-data-class"
ROUTE_HEADER = "x-passerelle-route"
Steps = tuple[tuple[str, tuple[Target, ...]], ...]


def prompt_text(body: dict[str, Any]) -> str:
    """What a router reads of a request: the text of its messages (or legacy prompt), in order."""
    parts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    elif isinstance(body.get("prompt"), str):
        parts.append(body["prompt"])
    return "\n".join(parts)


def union_route(config: RouteConfig, models: dict[str, Route]) -> Route:
    """The route's own ``Route``: every target of its models, default first, each once."""
    order = [config.default_model, *(m for m in config.models if m != config.default_model)]
    seen: list[Target] = []
    for name in order:
        seen.extend(t for t in models[name].targets if t not in seen)
    return Route(model=config.name, targets=tuple(seen))


def rule_holds(rule: RuleConfig, call: Call, plan: str | None, tokens: int) -> bool:
    if rule.features is not None and call.feature not in rule.features:
        return False
    if rule.tenants is not None and call.tenant not in rule.tenants:
        return False
    if rule.plans is not None and plan not in rule.plans:
        return False
    if (
        rule.data_classes is not None
        and call.headers.get(DATA_CLASS_HEADER) not in rule.data_classes
    ):
        return False
    if rule.min_prompt_tokens is not None and tokens < rule.min_prompt_tokens:
        return False
    return rule.max_prompt_tokens is None or tokens <= rule.max_prompt_tokens


class RouteStage:
    """``routes``: each configured route; ``models``: the model routes it may move a call to;
    ``routers``: the loaded artefact of each learned route; ``plan_of``: a tenant's plan."""

    def __init__(
        self,
        routes: list[RouteConfig],
        models: dict[str, Route],
        routers: dict[str, LearnedRouter],
        pricer: Pricer,
        plan_of: Callable[[str], str | None],
    ) -> None:
        self._routes = {r.name: r for r in routes}
        self._models = models
        self._routers = routers
        self._pricer = pricer
        self._plan_of = plan_of
        # what each learned route's quality target costs, from its artefact's calibration
        self._weights = {
            r.name: routers[r.name].cost_weight_for(r.quality_target)
            for r in routes
            if r.name in routers
        }

    async def __call__(self, call: Call, next: Next) -> None:
        config = self._routes.get(call.route.model) if call.route is not None else None
        if config is None:
            await next(call)
            return
        candidates = await self._candidates(call, config)
        model, code, reason, steps = self._decide(call, config, candidates)
        chosen = self._models[model]
        call.reroute(chosen)  # the call's filters apply to the chosen model's targets
        baseline = candidates.get(config.default_model) or self._admitted(
            call, config.default_model
        )
        call.routed = Routed(
            route=config.name,
            model=model,
            code=code,
            reason=reason,
            baseline=baseline[0] if baseline else None,
            steps=steps,
        )
        call.response_headers[ROUTE_HEADER] = call.routed.header()
        await next(call)

    def _admitted(self, call: Call, model: str) -> tuple[Target, ...]:
        return call.eligible.admitted(self._models[model])

    async def _candidates(self, call: Call, config: RouteConfig) -> dict[str, tuple[Target, ...]]:
        """The route's models with a target the call may use now, in the route's order."""
        found: dict[str, tuple[Target, ...]] = {}
        for name in config.models:
            usable = []
            for t in self._admitted(call, name):
                if await t.breaker.wait_s(call.tenant, t.upstream_model) <= 0:
                    usable.append(t)
            if usable:
                found[name] = tuple(usable)
        if not found:  # every model filtered out or unavailable: resolution's refusal says why
            found = {name: ts for name in config.models if (ts := self._admitted(call, name))}
        return found or {config.default_model: self._models[config.default_model].targets}

    def _fallback(self, config: RouteConfig, candidates: dict[str, Any]) -> str:
        return (
            config.default_model if config.default_model in candidates else next(iter(candidates))
        )

    def _decide(
        self, call: Call, config: RouteConfig, candidates: dict[str, tuple[Target, ...]]
    ) -> tuple[str, str, str, Steps]:
        """(model, header code, ledger reason, cascade steps)."""
        fallback = self._fallback(config, candidates)
        if config.strategy == "rules":
            tokens = estimate_prompt_tokens(call.body)
            plan = self._plan_of(call.tenant) if call.tenant else None
            for n, rule in enumerate(config.rules, start=1):
                if rule.model in candidates and rule_holds(rule, call, plan, tokens):
                    return rule.model, "rule", f"rule {n}", ()
            return fallback, "default", "no rule matched", ()
        if config.strategy == "cascade":
            if call.stream or call.endpoint not in ("chat.completions", "completions"):
                return fallback, "default", "cascade: a stream cannot be checked first", ()
            order = sorted(candidates, key=lambda m: self._unit_price(candidates[m], call))
            steps = tuple((m, candidates[m]) for m in order)
            return order[0], "cascade", f"cascade step 1 of {len(order)}", steps
        return self._learned(call, config, candidates, fallback)

    def _learned(
        self,
        call: Call,
        config: RouteConfig,
        candidates: dict[str, tuple[Target, ...]],
        fallback: str,
    ) -> tuple[str, str, str, Steps]:
        router = self._routers[config.name]
        prediction = router.predict(prompt_text(call.body))
        if not prediction.familiar:
            why = f"unfamiliar prompt ({prediction.familiarity:.2f} < floor)"
            return fallback, "default", why, ()
        ceiling = float(config.max_cost_usd) if config.max_cost_usd is not None else None
        weight = self._weights[config.name]
        choice = choose(prediction, list(candidates), cost_weight=weight, max_cost_usd=ceiling)
        if choice is None:
            return fallback, "default", "no candidate the router knows", ()
        return choice.model, "learned", choice.reason, ()

    def _unit_price(self, targets: tuple[Target, ...], call: Call) -> float:
        """A step's price for ordering a cascade: its first target's input plus output rate
        (an unpriced target last)."""
        price = self._pricer.price(targets[0], call.received_at)
        return float("inf") if price is None else float(price.input + price.output)
