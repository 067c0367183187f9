"""Resolution: the model a client asked for, to its ordered targets, and those the call may use.

The routing table (``pipeline/targets.py``: ``Route``, ``Target``) is built once from the
configuration; resolving is one dictionary lookup. Nothing a client sends can add a target or
change where one points. The call's eligible targets start as the route's, less those whose
provider lacks a capability the request needs (a 400 ``no_eligible_target`` naming it when none
is left); later stages narrow them further with ``call.narrow``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from passerelle.errors import NotFoundError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pipeline.targets import Route, Target, capability_filters
from passerelle.pricing.catalogue import Catalogue, Price
from passerelle.pricing.cost import cost_usd
from passerelle.providers.base import Usage


class Pricer:
    """The price of a target on a day: configured first, then the dated catalogue."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def price(self, target: Target, at: float) -> Price | None:
        if target.price is not None:
            return target.price
        return self._catalogue.lookup(target.upstream_model, datetime.fromtimestamp(at, UTC).date())

    def cost(self, target: Target, at: float, usage: Usage) -> Decimal | None:
        """What ``usage`` on the target cost on that day; None when it has no known price."""
        price = self.price(target, at)
        if price is None:
            return None
        return cost_usd(
            price,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )


class Resolve:
    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes

    async def __call__(self, call: Call, next: Next) -> None:
        assert call.model is not None
        route = self.routes.get(call.model)
        if route is None:
            raise NotFoundError(
                f"the model '{call.model}' does not exist or you do not have access to it",
                param="model",
                code="model_not_found",
            )
        call.resolved(route)
        for rule in capability_filters(call.endpoint, call.stream, call.body):
            call.eligible.narrow(rule, route.model)
        await next(call)
