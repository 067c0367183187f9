"""Data classes: how sensitive a request is, and which providers its class lets it reach.

Each provider has a jurisdiction (``self-hosted``, ``FR``, ``EU``, ``US``...). Each request has a
data class, one of the operator's (``public``, ``internal``, ``confidential``, ``personal``, or
their own), listed in the policy from the least to the most sensitive. A class allows a set of
jurisdictions or provider names (``any`` for all) and says what to do with personal data found
in the request (``allow``, ``pseudonymise``, ``block``).

The class of a call is the highest of its floor and what the client asked for: the floor is its
tenant's class (or the policy's default) and its feature's, if one is set; a client may raise
its class with ``X-Passerelle-Data-Class`` but never lower it below that floor. A provider with
no declared jurisdiction is reached only by a class that allows ``any`` or names it: unknown is
never taken for allowed. Pure values: the pipeline's policy stage narrows each call's targets
with them (``pipeline/policy.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from passerelle.errors import InvalidRequestError

ANY = "any"
HEADER = "X-Passerelle-Data-Class"


class UnknownDataClassError(InvalidRequestError):
    """The client named a data class the policy does not have."""

    code = "invalid_data_class"


@dataclass(frozen=True, slots=True)
class DataClass:
    name: str
    rank: int  # its place in the policy: higher is more sensitive
    allow: frozenset[str] = frozenset({ANY})  # jurisdictions and provider names
    personal_data: str = "allow"  # "allow" | "pseudonymise" | "block"

    @property
    def unrestricted(self) -> bool:
        return ANY in self.allow

    def admits(self, provider: str, jurisdiction: str | None) -> bool:
        if ANY in self.allow or provider in self.allow:
            return True
        return jurisdiction is not None and jurisdiction in self.allow

    def rule(self) -> str:
        """The policy line, for refusals: ``data class 'c' allows only EU, self-hosted``."""
        return f"data class '{self.name}' allows only {', '.join(sorted(self.allow))}"


@dataclass(frozen=True, slots=True)
class DataPolicy:
    """The operator's classes, the default one, and the floors of tenants and features."""

    classes: Mapping[str, DataClass]
    default: DataClass
    tenants: Mapping[str, DataClass] = field(default_factory=dict)
    features: Mapping[str, DataClass] = field(default_factory=dict)

    def floor(self, tenant: str | None, feature: str | None) -> DataClass:
        floor = self.tenants.get(tenant, self.default) if tenant else self.default
        of_feature = self.features.get(feature) if feature else None
        return of_feature if of_feature and of_feature.rank > floor.rank else floor

    def classify(self, asked: str | None, tenant: str | None, feature: str | None) -> DataClass:
        """The call's class: its floor, raised (never lowered) by what the client asked."""
        floor = self.floor(tenant, feature)
        if asked is None:
            return floor
        wanted = self.classes.get(asked.strip())
        if wanted is None:
            names = ", ".join(self.classes)
            raise UnknownDataClassError(
                f"unknown data class {asked.strip()[:64]!r} in {HEADER}: the policy has {names}"
            )
        return wanted if wanted.rank > floor.rank else floor


def data_policy(
    classes: Mapping[str, tuple[list[str], str]],
    default: str,
    tenants: Mapping[str, str],
    features: Mapping[str, str],
) -> DataPolicy:
    """The policy from its configured values: ``classes`` maps each name, least sensitive first,
    to (allow, personal_data); tenants and features map to class names."""
    built = {
        name: DataClass(name, rank, frozenset(allow), personal)
        for rank, (name, (allow, personal)) in enumerate(classes.items())
    }
    return DataPolicy(
        classes=built,
        default=built[default],
        tenants={t: built[c] for t, c in tenants.items()},
        features={f: built[c] for f, c in features.items()},
    )
