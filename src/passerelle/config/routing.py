"""The routing section of the configuration: routes, their rules, cascades, and prompt capture.

A route is a model name clients may ask for (``auto``) that is served by one of several models
of ``models:``, chosen per request (``docs/routing.md``). Its declaration lives here, apart from
the rest of the schema, and ``Config`` checks that every name it uses exists.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator

from passerelle.config.base import Strict


class RuleConfig(Strict):
    """One rule of a `rules` route: every condition given must hold; the first rule that holds
    chooses its model."""

    model: str = Field(description="The model (one of the route's `models`) this rule chooses.")
    features: list[str] | None = Field(
        default=None, description="The call's feature (`x-passerelle-feature`) is one of these."
    )
    tenants: list[str] | None = Field(
        default=None, description="The calling tenant is one of these."
    )
    plans: list[str] | None = Field(default=None, description="The tenant's plan is one of these.")
    data_classes: list[str] | None = Field(
        default=None,
        description="The data class the client declares (`x-passerelle-data-class`) is one of "
        "these.",
    )
    min_prompt_tokens: int | None = Field(
        default=None, ge=0, description="The estimated prompt is at least this many tokens."
    )
    max_prompt_tokens: int | None = Field(
        default=None, ge=0, description="The estimated prompt is at most this many tokens."
    )


class CascadeConfig(Strict):
    check: Literal["heuristic"] = Field(
        default="heuristic",
        description="How an answer is judged good enough: `heuristic` fails an answer that is "
        "empty, cut by its length limit, a refusal, or shorter than `min_chars`.",
    )
    min_chars: int = Field(
        default=1, ge=0, description="`heuristic`: the fewest characters of a passing answer."
    )


class RouteConfig(Strict):
    name: str = Field(description="The model name clients ask for (e.g. `auto`).")
    strategy: Literal["learned", "rules", "cascade"] = Field(
        description="`learned`: a router trained on outcomes predicts each model's quality; "
        "`rules`: the first matching rule; `cascade`: the cheapest model first, the next one "
        "when a check of its answer fails."
    )
    models: list[str] = Field(
        min_length=1, description="Names from `models:` this route may serve the call with."
    )
    router: str | None = Field(
        default=None,
        description="`learned`: the artefact `passerelle router train` wrote (a path).",
    )
    quality_target: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="`learned`: the share of the best model's quality to keep over the traffic; "
        "each call takes the best predicted quality less a cost weight, the largest weight that "
        "kept this share on the prompts held out at training.",
    )
    max_cost_usd: Decimal | None = Field(
        default=None,
        gt=0,
        description="`learned`: a cost ceiling per request instead of the quality target: the "
        "best predicted model whose predicted cost fits under it.",
    )
    default: str | None = Field(
        default=None,
        description="The model served when the router is unsure (an unfamiliar prompt, no rule "
        "matched, no eligible model it knows); the first of `models` when absent.",
    )
    rules: list[RuleConfig] = Field(default_factory=list, description="`rules`: tried in order.")
    cascade: CascadeConfig = Field(
        default_factory=CascadeConfig, description="`cascade`: how an answer is checked."
    )

    @property
    def default_model(self) -> str:
        return self.default or self.models[0]

    @model_validator(mode="after")
    def _consistent(self) -> RouteConfig:
        if self.strategy == "learned" and not self.router:
            raise ValueError(f"route {self.name!r}: strategy learned needs `router`")
        names = set(self.models)
        if len(names) != len(self.models):
            raise ValueError(f"route {self.name!r}: a model is listed twice")
        if self.default is not None and self.default not in names:
            raise ValueError(f"route {self.name!r}: default {self.default!r} is not in its models")
        for rule in self.rules:
            if rule.model not in names:
                raise ValueError(
                    f"route {self.name!r}: rule model {rule.model!r} is not in its models"
                )
        return self


class CaptureConfig(Strict):
    """Prompts kept for training the router (`passerelle router train --from-ledger`)."""

    tenant: str = Field(description="The tenant whose prompts are kept.")
    feature: str | None = Field(
        default=None, description="Only this feature's calls; all the tenant's when absent."
    )


def check_routes(routes: list[RouteConfig], models: set[str], tenants: set[str]) -> None:
    """Names a route uses must exist; a route may not shadow a model."""
    seen: set[str] = set()
    for route in routes:
        if route.name in seen:
            raise ValueError(f"routes: {route.name!r} is declared twice")
        seen.add(route.name)
        if route.name in models:
            raise ValueError(f"route {route.name!r}: a model of that name exists")
        unknown = [m for m in route.models if m not in models]
        if unknown:
            raise ValueError(f"route {route.name!r}: unknown models {unknown}")
        for rule in route.rules:
            for t in rule.tenants or ():
                if t not in tenants:
                    raise ValueError(f"route {route.name!r}: rule names unknown tenant {t!r}")
