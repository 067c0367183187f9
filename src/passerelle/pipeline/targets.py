"""Targets, routes, and the targets one call may use.

A ``Target`` is a provider, the model name it knows, and the price that applies; a ``Route`` is a
client-facing model and its ordered targets. Resolution gives a call its route, and with it the
targets it may use (``Eligible``). Stages narrow that list, never widen it: each narrowing is a
``Filter`` with a reason, kept on the call with what it removed, so that when a stage moves the
call to another route (the margin floor's degradation, a router) every filter is applied again to
the new route's targets, and a target a filter excluded cannot come back by a side door. A call
left with no target is refused with the filters that emptied it (``NoEligibleTargetError``),
never sent somewhere else.

The first filters are the capabilities (``capability_filters``): a provider that cannot serve the
endpoint (embeddings, legacy completions) or a feature the request uses (streaming, tools, a JSON
response format, log probabilities, image parts) is removed, instead of answering 400 upstream or,
worse, 200 without the feature. ``n > 1`` removes nothing: dispatch makes ``n`` calls to a
provider that gives one choice per call (``providers/fanout.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from passerelle.errors import APIError, InvalidRequestError
from passerelle.pricing.catalogue import Price
from passerelle.providers.base import Capabilities, Provider
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


class NoEligibleTargetError(InvalidRequestError):
    """Every target of the call's route was removed by a filter; the message names them."""

    code = "no_eligible_target"


@dataclass(frozen=True, slots=True)
class Filter:
    """A narrowing: why (``reason``, for messages and the ledger), which targets stay (``keep``),
    and the refusal when it leaves none (400 by default; a policy filter says 403)."""

    reason: str
    keep: Callable[[Target], bool]
    refusal: type[APIError] = NoEligibleTargetError
    param: str | None = None  # the request field that needs what the removed targets lack


@dataclass(slots=True)
class Eligible:
    """The targets a call may use, the filters applied to them, and what each removed."""

    targets: tuple[Target, ...] = ()
    filters: list[Filter] = field(default_factory=list)
    removed: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (reason, labels)

    def narrow(self, rule: Filter, model: str) -> None:
        """Apply a filter, note it and what it removed; refuse when no target is left."""
        self.filters.append(rule)
        self._apply(rule, model)

    def reset(self, route: Route) -> None:
        """A new route: its targets, with every filter of the call applied again."""
        self.targets = route.targets
        self.removed = []
        for rule in self.filters:
            self._apply(rule, route.model)

    def admitted(self, route: Route) -> tuple[Target, ...]:
        """The targets of ``route`` every filter of the call keeps, without moving the call."""
        return tuple(t for t in route.targets if all(f.keep(t) for f in self.filters))

    def _apply(self, rule: Filter, model: str) -> None:
        kept = tuple(t for t in self.targets if rule.keep(t))
        if len(kept) != len(self.targets):
            gone = tuple(t.label for t in self.targets if t not in kept)
            self.removed.append((rule.reason, gone))
        self.targets = kept
        if not kept:
            raise rule.refusal(
                self.explain(model), param=rule.param, code=NoEligibleTargetError.code
            )

    def explain(self, model: str) -> str:
        why = "; ".join(f"{reason} removed {', '.join(labels)}" for reason, labels in self.removed)
        return f"no target of model '{model}' can serve this request: {why or 'it has none'}"


def _has_image(body: dict[str, Any]) -> bool:
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("image_url", "input_image"):
                    return True
    return False


def _wants_json(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object")


def _wants_logprobs(endpoint: str, body: dict[str, Any]) -> bool:
    if endpoint == "completions":  # a number of alternatives per token; 0 still asks for some
        value = body.get("logprobs")
        return isinstance(value, int) and not isinstance(value, bool)
    return body.get("logprobs") is True


def _capability(reason: str, has: Callable[[Capabilities], bool], param: str) -> Filter:
    return Filter(reason, lambda t: has(t.provider.capabilities), param=param)


def capability_filters(endpoint: str, stream: bool, body: dict[str, Any]) -> list[Filter]:
    """What the request needs of a provider, as filters (none for a plain text completion)."""
    if endpoint == "embeddings":
        return [_capability("capability 'embeddings'", lambda c: c.embeddings, "model")]
    needed: list[Filter] = []
    if endpoint == "completions":
        needed.append(_capability("capability 'completions'", lambda c: c.completions, "model"))
    if stream:
        needed.append(_capability("capability 'streaming'", lambda c: c.streaming, "stream"))
    if body.get("tools"):
        needed.append(_capability("capability 'tools'", lambda c: c.tools, "tools"))
    if _wants_json(body):
        needed.append(
            _capability("capability 'json_schema'", lambda c: c.json_schema, "response_format")
        )
    if _wants_logprobs(endpoint, body):
        needed.append(_capability("capability 'logprobs'", lambda c: c.logprobs, "logprobs"))
    if _has_image(body):
        needed.append(_capability("capability 'vision'", lambda c: c.vision, "messages"))
    return needed
