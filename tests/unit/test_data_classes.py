"""A call's data class: its floor (tenant or default, and feature), raised never lowered by the
client; and which providers a class admits (unknown jurisdiction never counts as allowed)."""

from __future__ import annotations

import pytest

from passerelle.sovereignty.classes import UnknownDataClassError, data_policy

POLICY = data_policy(
    {
        "public": (["any"], "allow"),
        "internal": (["any"], "pseudonymise"),
        "confidential": (["self-hosted", "EU", "mistral"], "pseudonymise"),
        "secret": (["self-hosted"], "allow"),
    },
    default="internal",
    tenants={"bank": "confidential"},
    features={"hr": "secret", "blog": "public"},
)


@pytest.mark.parametrize(
    ("asked", "tenant", "feature", "expected"),
    [
        (None, "acme", None, "internal"),  # the default
        ("public", "acme", None, "internal"),  # below the default: not lowered
        ("secret", "acme", None, "secret"),  # raised
        (None, "bank", None, "confidential"),  # the tenant's
        ("internal", "bank", None, "confidential"),
        (None, "bank", "hr", "secret"),  # the feature's, higher than the tenant's
        (None, "bank", "blog", "confidential"),  # a lower feature class does not lower it
        (" secret ", None, None, "secret"),
    ],
)
def test_the_class_is_the_floor_raised_by_the_client(
    asked: str | None, tenant: str | None, feature: str | None, expected: str
) -> None:
    assert POLICY.classify(asked, tenant, feature).name == expected


def test_an_unknown_class_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(UnknownDataClassError, match="public, internal, confidential, secret"):
        POLICY.classify("Secret", "acme", None)


def test_a_class_admits_its_jurisdictions_and_named_providers_only() -> None:
    confidential = POLICY.classes["confidential"]
    assert confidential.admits("scaleway", "EU") and confidential.admits("mistral", "FR")
    assert not confidential.admits("openai", "US")
    assert not confidential.admits("mystery", None)  # undeclared is not allowed
    assert POLICY.classes["internal"].admits("mystery", None)
    assert confidential.rule() == "data class 'confidential' allows only EU, mistral, self-hosted"
