"""The counters behind budgets and rate limits, and the embedded (one-process) implementation.

Admission checks every rule of a call and reserves its worst-case cost in one atomic step; in one
process that is a plain function with no ``await`` inside, so no other request can interleave.
Settlement replaces the reservation with the real cost. Rate limits are sliding windows of one
minute, exact: a request is counted at admission (its tokens at prompt estimate plus the output it
may produce), corrected at settlement. An admission may carry a ``Floor`` (a margin floor): it is
refused as such when the floor's counter, spent plus reserved, is already past the floor, in the
same step as the reservation, so a burst in flight cannot slip past it.
``RedisCounters`` (``limits/redis_counters.py``) keeps the same contract across replicas.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from passerelle.limits.rules import BudgetRule, RateRule

WINDOW_S = 60.0

# seeds a budget counter from the ledger: (rule, at) -> nano-dollars spent so far in its period
Seed = Callable[[BudgetRule, float], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Floor:
    """Admit only while ``rule``'s counter (spent + reserved, in flight included) is at most
    ``limit_nano``; past it, the caller decides (degrade or refuse)."""

    rule: BudgetRule
    limit_nano: int


@dataclass(slots=True)
class Admission:
    reservation_id: str
    at: float
    amount_nano: int
    budgets: list[BudgetRule]
    rates: list[RateRule]
    tokens: int
    floor: Floor | None = None


@dataclass(slots=True)
class Refusal:
    rule: BudgetRule | RateRule | Floor
    used: int  # nano-dollars spent + reserved, or requests / tokens in the window
    retry_after_s: int


@dataclass(slots=True)
class Reservation:
    admission: Admission
    soft_exceeded: list[BudgetRule] = field(default_factory=list)
    settled: bool = False
    held: list[Any] = field(default_factory=list)  # what the counters need to settle it


class Counters(Protocol):
    async def start(self, rules: list[BudgetRule], seed: Seed) -> None: ...

    async def close(self) -> None: ...

    async def admit(self, admission: Admission) -> Reservation | Refusal: ...

    async def settle(self, reservation: Reservation, actual_nano: int, tokens: int) -> None: ...

    async def spent_nano(self, rule: BudgetRule, at: float) -> int: ...


def with_floor(admission: Admission, at: float) -> list[BudgetRule]:
    """The admission's budgets, one per counter, the floor's counter among them (it is counted
    like any budget: a tenant under a margin floor has it among its budgets already)."""
    rules = admission.budgets
    if admission.floor is not None:
        rules = [*rules, admission.floor.rule]
    return dedupe(rules, at)


def dedupe(rules: list[BudgetRule], at: float) -> list[BudgetRule]:
    """One rule per counter: two rules on the same scope and period keep the stricter."""
    by_counter: dict[str, BudgetRule] = {}
    for r in rules:
        seen = by_counter.get(r.counter(at))
        if seen is None or (r.hard, -r.usd) > (seen.hard, -seen.usd):
            by_counter[r.counter(at)] = r
    return list(by_counter.values())


class _Entry:
    """One admission in a rate window; ``live`` is False once the window has dropped it."""

    __slots__ = ("amount", "at", "live")

    def __init__(self, at: float, amount: int) -> None:
        self.at, self.amount, self.live = at, amount, True


class LocalCounters:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._spent: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._windows: dict[str, deque[_Entry]] = {}
        self._window_totals: dict[str, int] = {}
        self._seeding: dict[str, asyncio.Lock] = {}
        self._seed: Seed | None = None
        self._clock = clock

    async def start(self, rules: list[BudgetRule], seed: Seed) -> None:
        self._seed = seed
        await self._ensure_seeded(rules, self._clock())

    async def close(self) -> None:
        return None

    async def _ensure_seeded(self, rules: list[BudgetRule], at: float) -> None:
        """A period that began since start-up (or a scope not seen yet) starts from the ledger:
        one query per counter however many requests arrive meanwhile."""
        for rule in rules:
            counter = rule.counter(at)
            if counter in self._spent:
                continue
            lock = self._seeding.setdefault(counter, asyncio.Lock())
            async with lock:
                if counter not in self._spent:
                    self._spent[counter] = await self._seed(rule, at) if self._seed else 0
            self._seeding.pop(counter, None)

    async def admit(self, admission: Admission) -> Reservation | Refusal:
        at = admission.at
        budgets = with_floor(admission, at)
        await self._ensure_seeded(budgets, at)
        # from here to the end: no await, so the check and the reservation are one step
        counters = [rule.counter(at) for rule in budgets]
        floor = admission.floor
        if floor is not None:
            counter = floor.rule.counter(at)
            used = self._spent.get(counter, 0) + self._reserved.get(counter, 0)
            if used > floor.limit_nano:
                return Refusal(floor, used, 0)
        soft = []
        for rule, counter in zip(budgets, counters, strict=True):
            used = self._spent.get(counter, 0) + self._reserved.get(counter, 0)
            if used + admission.amount_nano > rule.limit_nano:
                if rule.hard:
                    return Refusal(rule, used, rule.ttl(at) - 86400)
                soft.append(rule)
        for rate in admission.rates:
            refusal = self._check_rate(rate, admission, at)
            if refusal is not None:
                return refusal
        for counter in counters:
            self._reserved[counter] = self._reserved.get(counter, 0) + admission.amount_nano
        held = []
        for rate in admission.rates:
            entry = _Entry(at, 1 if rate.kind == "rpm" else admission.tokens)
            self._windows.setdefault(rate.counter, deque()).append(entry)
            self._window_totals[rate.counter] = (
                self._window_totals.get(rate.counter, 0) + entry.amount
            )
            if rate.kind == "tpm":
                held.append((rate.counter, entry))
        admission.budgets = budgets
        return Reservation(admission=admission, soft_exceeded=soft, held=held + counters)

    def _check_rate(self, rate: RateRule, admission: Admission, at: float) -> Refusal | None:
        window = self._windows.setdefault(rate.counter, deque())
        total = self._window_totals.get(rate.counter, 0)
        while window and window[0].at <= at - WINDOW_S:
            gone = window.popleft()
            gone.live = False
            total -= gone.amount
        self._window_totals[rate.counter] = total
        amount = 1 if rate.kind == "rpm" else admission.tokens
        if total + amount > rate.limit:
            retry = int(window[0].at + WINDOW_S - at) + 1 if window else 1
            return Refusal(rate, total, retry)
        return None

    async def settle(self, reservation: Reservation, actual_nano: int, tokens: int) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        amount = reservation.admission.amount_nano
        for held in reservation.held:
            if isinstance(held, str):  # a budget counter
                self._reserved[held] = self._reserved.get(held, 0) - amount
                self._spent[held] = self._spent.get(held, 0) + actual_nano
                continue
            counter, entry = held
            if entry.live:  # still in its window: the estimate becomes the real count
                self._window_totals[counter] += tokens - entry.amount
                entry.amount = tokens

    async def spent_nano(self, rule: BudgetRule, at: float) -> int:
        await self._ensure_seeded([rule], at)
        return self._spent.get(rule.counter(at), 0)
