"""The configuration reference, generated from the schema so the docs cannot drift."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from passerelle.config.schema import Config

HEADER = """# Configuration reference

Generated from `src/passerelle/config/schema.py` by `passerelle config reference`; a test checks
that this file matches. Unknown keys are rejected. Secrets are references: `env:NAME` or
`file:PATH`. Environment overrides for deployment: `PASSERELLE_STORE`, `PASSERELLE_REDIS`,
`PASSERELLE_HOST`, `PASSERELLE_PORT`, and `PASSERELLE_CONFIG` for the file itself.
"""


def _models_of(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(m for m in _models_of(arg) if m not in found)
    return found


def _type_name(annotation: Any) -> str:
    if "env:NAME" in str(annotation):  # the SecretRef alias, however it is wrapped
        text = "SecretRef"
        if "Optional" in str(annotation) or "None" in str(annotation).split("]")[-1]:
            text += " | None"
        return (
            text.replace("SecretRef", "list[SecretRef | KeyConfig]")
            if str(annotation).startswith("list")
            else text
        )
    text = str(annotation).replace("typing.", "").replace("decimal.", "")
    text = re.sub(r"passerelle\.config\.\w+\.", "", text)
    # a constrained key (``Annotated[str, Field(pattern=...)]``) reads as its pattern
    text = re.sub(r"Annotated\[str, FieldInfo\(.*?pattern='([^']*)'\)\]\)\]", r"str (\1)", text)
    return text.replace("<class '", "").replace("'>", "")


def _section(model: type[BaseModel], path: str, seen: set[type[BaseModel]]) -> list[str]:
    lines = [f"\n## `{path}`\n", "| key | type | default | description |", "|---|---|---|---|"]
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        default = field.default
        if field.default_factory is not None:
            shown = "—"
        elif default is PydanticUndefined:
            shown = "required"
        else:
            shown = f"`{default}`"
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | `{_type_name(field.annotation)}` | {shown} | {desc} |")
        for sub in _models_of(field.annotation):
            if sub not in seen:
                seen.add(sub)
                suffix = "[]" if "list" in str(field.annotation) else ""
                nested.append(
                    (sub, f"{path}.{name}{suffix}" if path != "(top level)" else f"{name}{suffix}")
                )
    for sub, sub_path in nested:
        lines.extend(_section(sub, sub_path, seen))
    return lines


def reference_markdown() -> str:
    return HEADER + "\n".join(_section(Config, "(top level)", {Config})) + "\n"
