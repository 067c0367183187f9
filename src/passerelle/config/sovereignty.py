"""Where a call's data may go, and the record of where it went: ``sovereignty:`` and ``audit:``.

The data classes and what each allows (jurisdictions or providers, and what to do with personal
data), the class a call is raised to when personal data is found in it, how personal data is
looked for, and the audit trail's key and rhythm. ``docs/sovereignty.md`` says what each does.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from passerelle.config.base import SecretRef, Strict


class DetectionConfig(Strict):
    languages: list[Literal["en", "fr"]] = Field(
        default=["en", "fr"],
        min_length=1,
        description="The languages people's names are looked for in, each with its spaCy model "
        "(`en`: en_core_web_sm, `fr`: fr_core_news_sm); each text is read in the one it looks "
        "to be in. Patterns (e-mail, phone, card, IBAN, SSN, IP, NIR, SIREN, SIRET) need none.",
    )
    timeout_ms: float = Field(
        default=2000,
        gt=0,
        description="How long a call's detection may take; past it the call is refused with "
        "503 `personal_data_detection_failed` and nothing is sent (it fails closed).",
    )


CLASS_NAME = r"^[a-z][a-z0-9_-]*$"


class DataClassConfig(Strict):
    allow: list[str] = Field(
        default_factory=lambda: ["any"],
        min_length=1,
        description="Jurisdictions (`self-hosted`, `EU`, `US`...) or provider names its calls may "
        "reach; `any` for every provider.",
    )
    personal_data: Literal["allow", "pseudonymise", "block"] = Field(
        default="allow",
        description="What to do with personal data found in its calls.",
    )


class SovereigntyConfig(Strict):
    default_class: str = Field(
        default="internal", description="The class of a call whose tenant has none."
    )
    classes: dict[Annotated[str, Field(pattern=CLASS_NAME)], DataClassConfig] = Field(
        min_length=1,
        description="The data classes, from the least to the most sensitive: a client may raise "
        "its call's class (`X-Passerelle-Data-Class`) to a later one, never lower it below its "
        "tenant's or feature's.",
    )
    features: dict[str, str] = Field(
        default_factory=dict, description="The least class of a feature's calls, by feature."
    )
    personal_class: str | None = Field(
        default=None,
        description="The class a call is raised to when personal data is found in it (its "
        "targets narrowed again to what that class allows, and that class's `personal_data` "
        "applied); a call already at or above it keeps its own. None: no raising.",
    )
    detection: DetectionConfig = Field(
        default_factory=DetectionConfig, description="How personal data is looked for."
    )

    @model_validator(mode="after")
    def _known_classes(self) -> SovereigntyConfig:
        for where, name in [
            ("default_class", self.default_class),
            *([("personal_class", self.personal_class)] if self.personal_class else []),
            *((f"features.{f}", c) for f, c in self.features.items()),
        ]:
            if name not in self.classes:
                raise ValueError(f"sovereignty.{where}: unknown data class {name!r}")
        return self


class AuditConfig(Strict):
    key: SecretRef = Field(
        description="The key the trail's records are chained and its checkpoints signed with, by "
        "reference; keep it away from the database's administrators."
    )
    checkpoint_every_s: float = Field(
        default=300.0, gt=0, description="How often each process signs its chain's head."
    )
    flush_every_s: float = Field(
        default=0.2, gt=0, description="How long records wait to be written, in one batch."
    )
