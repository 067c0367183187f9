"""The request path's parts that the configuration describes, built once at start-up.

``Gateway.from_config`` (``gateway.py``) assembles the gateway from these: the routing table
(each model's ordered targets, their prices, breakers and jurisdictions; each route's union of
its models), the learned routers' artefacts, the exact cache's policy and the semantic lookup.
Nothing here runs on the request path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from passerelle.config.cache import ExactCacheConfig
from passerelle.config.load import Loaded
from passerelle.config.schema import Config
from passerelle.errors import ArtefactError, ConfigError
from passerelle.pipeline.cache_key import CachePolicy
from passerelle.pipeline.route import union_route
from passerelle.pipeline.targets import Route, Target
from passerelle.pricing.catalogue import configured_price
from passerelle.providers.base import Provider
from passerelle.providers.resilience import CircuitBreaker, LocalHealth, TargetHealth
from passerelle.providers.shared_breakers import Scripts, SharedHealth
from passerelle.routing.artefact import load
from passerelle.routing.router import LearnedRouter

if TYPE_CHECKING:
    from passerelle.pipeline.semantic import SemanticLookup
    from passerelle.store.redis import SharedState

log = logging.getLogger("passerelle")


def semantic_cache(config: Config, shared: SharedState | None) -> SemanticLookup:
    """The semantic lookup, its encoder loaded; without the `semantic` extra, a ConfigError."""
    try:
        from passerelle.pipeline.semantic import semantic_lookup
    except ImportError as exc:
        raise ConfigError(f"cache.semantic needs the optional extra 'semantic': {exc}") from exc
    assert config.cache.semantic is not None and config.cache.exact is not None
    return semantic_lookup(config.cache.semantic, config.cache.exact, shared)


def policy(exact: ExactCacheConfig) -> CachePolicy:
    return CachePolicy(
        allow_sampled=exact.allow_sampled,
        models=frozenset(exact.models) if exact.models is not None else None,
        except_models=frozenset(exact.except_models),
        per_user=exact.per_user,
        max_entry_bytes=exact.max_entry_bytes,
    )


def build_routes(
    config: Config, providers: dict[str, Provider], shared: Scripts | None = None
) -> dict[str, Route]:
    by_name = {p.name: p for p in config.providers}
    breakers: dict[str, TargetHealth] = {}
    for p in config.providers:
        failures, cooldown_s = p.breaker_failures, p.breaker_cooldown_s
        breakers[p.name] = (
            SharedHealth(shared, p.name, failures=failures, cooldown_s=cooldown_s)
            if shared is not None
            else LocalHealth(CircuitBreaker(failures=failures, cooldown_s=cooldown_s))
        )
    routes = {}
    for m in config.models:
        targets = []
        for t in m.targets:
            pc = by_name[t.provider]
            price = None
            if t.price is not None:
                price = configured_price(
                    t.price.input, t.price.output, t.price.cached_input, t.price.cache_write
                )
            targets.append(
                Target(
                    provider=providers[t.provider],
                    upstream_model=t.upstream_model or m.name,
                    price=price,
                    breaker=breakers[t.provider],
                    max_retries=pc.max_retries,
                    retry_backoff_s=pc.retry_backoff_s,
                    # an engine in the gateway's own process is self-hosted by definition
                    jurisdiction=pc.jurisdiction or ("self-hosted" if pc.kind == "local" else None),
                )
            )
        routes[m.name] = Route(model=m.name, targets=tuple(targets), degrade_to=m.degrade_to)
    for r in config.routes:  # a route resolves to every target of its models
        routes[r.name] = union_route(r, routes)
    return routes


def load_routers(loaded: Loaded) -> dict[str, LearnedRouter]:
    """Each learned route's artefact, its path relative to the configuration file's folder. An
    artefact that cannot be read, or knows none of its route's models, stops start-up."""
    found: dict[str, LearnedRouter] = {}
    source = Path(loaded.source)
    base = source.parent if source.is_file() else Path.cwd()
    for r in loaded.config.routes:
        if r.strategy != "learned" or r.router is None:
            continue
        path = Path(r.router) if Path(r.router).is_absolute() else base / r.router
        try:
            router = LearnedRouter(load(path))
        except ArtefactError as exc:
            raise ConfigError(f"route {r.name!r}: router: {exc}") from exc
        unknown = [m for m in r.models if not router.knows(m)]
        if len(unknown) == len(r.models):
            raise ConfigError(
                f"route {r.name!r}: its router {path} was trained on {router.models}, none of "
                f"the route's models {r.models}"
            )
        if unknown:
            log.warning(
                "route %s: its router has no outcomes for %s; they serve only as its default",
                r.name,
                ", ".join(unknown),
            )
        found[r.name] = router
    return found
