"""Resolution: the model a client asked for, to its ordered targets.

A ``Target`` is a provider, the model name it knows, and the price that applies. The routing table
is built once from the configuration; resolving is one dictionary lookup. Nothing a client sends
can add a target or change where one points.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from passerelle.errors import NotFoundError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pricing.catalogue import Catalogue, Price
from passerelle.providers.base import Provider
from passerelle.providers.resilience import TargetHealth


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    upstream_model: str
    price: Price | None  # from the configuration; the catalogue is consulted when None
    breaker: TargetHealth  # its breakers and cooling: skip it while it waits
    max_retries: int
    retry_backoff_s: float
    jurisdiction: str | None = None

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.upstream_model}"


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    targets: tuple[Target, ...]
    degrade_to: str | None = None


class Pricer:
    """The price of a target on a day: configured first, then the dated catalogue."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def price(self, target: Target, at: float) -> Price | None:
        if target.price is not None:
            return target.price
        return self._catalogue.lookup(target.upstream_model, datetime.fromtimestamp(at, UTC).date())


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
        call.route = route
        await next(call)
