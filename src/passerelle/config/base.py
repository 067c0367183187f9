"""What every part of the configuration is made of: strict models and secret references."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SECRET_PREFIXES = ("env:", "file:")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SecretRef = Annotated[
    str,
    Field(
        description="A secret by reference: `env:NAME` (environment variable) or `file:PATH`.",
        pattern=r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$",
    ),
]
