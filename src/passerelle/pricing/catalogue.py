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
    cache_write: Decimal | None = None  # writing the prompt cache (Anthropic); else the input price

    @property
    def cache_write_input(self) -> Decimal:
        return self.input if self.cache_write is None else self.cache_write


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
            write = row.get("cache_write")
            entries.append(
                CatalogueEntry(
                    model=row["model"],
                    since=since,
                    price=Price(
                        input=inp,
                        output=Decimal(str(row["output"])),
                        cached_input=inp if cached is None else Decimal(str(cached)),
                        version=f"catalogue:{row['model']}@{since.isoformat()}",
                        cache_write=None if write is None else Decimal(str(write)),
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
    cache_write: Decimal | None = None,
) -> Price:
    """A price from the configuration; its version is a digest of its numbers."""
    cached = input if cached_input is None else cached_input
    numbers = f"{input}/{output}/{cached}" + ("" if cache_write is None else f"/{cache_write}")
    digest = hashlib.sha256(numbers.encode()).hexdigest()[:8]
    return Price(
        input=input,
        output=output,
        cached_input=cached,
        version=f"config:{digest}",
        cache_write=cache_write,
    )
