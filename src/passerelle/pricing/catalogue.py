"""The price catalogue: which price applies to a target, and its version.

Resolution order for a target: its own ``price`` in the configuration, then the shipped catalogue
(``catalogue.yaml``, effective-dated: the newest entry whose ``since`` is not after the call), else
*unpriced*. Every resolved price carries a version string that the ledger stores with each record,
so a later price change never rewrites history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens, and where it came from."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    version: str


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    model: str
    since: date
    price: Price


class Catalogue:
    def __init__(self, entries: list[CatalogueEntry]) -> None:
        by_model: dict[str, list[CatalogueEntry]] = {}
        for e in entries:
            by_model.setdefault(e.model, []).append(e)
        for lst in by_model.values():
            lst.sort(key=lambda e: e.since, reverse=True)
        self._by_model = by_model

    @classmethod
    def shipped(cls) -> Catalogue:
        text = resources.files("passerelle.pricing").joinpath("catalogue.yaml").read_text("utf-8")
        return cls.from_yaml(text)

    @classmethod
    def from_yaml(cls, text: str) -> Catalogue:
        doc: dict[str, Any] = yaml.safe_load(text)
        entries = []
        for row in doc["prices"]:
            since = date.fromisoformat(str(row["since"]))
            inp = Decimal(str(row["input"]))
            cached = row.get("cached_input")
            entries.append(
                CatalogueEntry(
                    model=row["model"],
                    since=since,
                    price=Price(
                        input=inp,
                        output=Decimal(str(row["output"])),
                        cached_input=inp if cached is None else Decimal(str(cached)),
                        version=f"catalogue:{row['model']}@{since.isoformat()}",
                    ),
                )
            )
        return cls(entries)

    def lookup(self, model: str, on: date) -> Price | None:
        for e in self._by_model.get(model, ()):
            if e.since <= on:
                return e.price
        return None


def configured_price(
    input: Decimal,
    output: Decimal,
    cached_input: Decimal | None,
) -> Price:
    """A price from the configuration; its version is a digest of its numbers."""
    cached = input if cached_input is None else cached_input
    digest = hashlib.sha256(f"{input}/{output}/{cached}".encode()).hexdigest()[:8]
    return Price(input=input, output=output, cached_input=cached, version=f"config:{digest}")
