"""How personal data is looked for (``sovereignty.detection:``), kept apart from ``schema.py``.

The detector runs only for calls whose data class asks for personal data to be pseudonymised
or blocked, or that ``sovereignty.personal_class`` would raise; ``docs/sovereignty.md`` says
what it finds and what it costs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DetectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
