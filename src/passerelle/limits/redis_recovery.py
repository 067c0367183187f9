"""Putting Redis' budget counters right: corrected from the ledger, holds put back after a loss.

The ledger is the truth; Redis' ``spent`` is a fast copy of it. The copy falls behind when a
call's cost never reaches Redis: the settlement could not reach it, the replica died before
settling, or Redis lost the counter. A call's cost enters ``spent`` exactly once, by one of two
paths: its settlement, which only counts when it removes the call's hold (so a retried settlement
counts once), or a *correction*, which counts every call in the ledger whose hold is gone.

A correction sets ``spent := max(spent, ledger - open)``, where ``ledger`` is what the ledger
holds for the counter's scope and period and ``open`` the recorded cost of the calls whose hold is
still open (their settlement will count them). It runs at start-up, when a counter is missing
(Redis restarted empty, flushed, evicted), and when a counter is *stale*: a hold expired unsettled,
or a settlement found its hold gone. A stale counter is rebuilt (``spent`` taken away first: the
max of two figures that each miss different calls is not the sum), and while a counter is missing
admissions wait for it and settlements keep their holds. It also recomputes ``reserved``.

After Redis lost its state, each replica puts back its own open holds (admitted, not yet
recorded) under the new epoch before any counter is reseeded (the recovery window, see
``store/redis.py``); calls already recorded are in the ledger, which the reseed reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from passerelle.errors import StoreError
from passerelle.limits.counters import Reservation, Seed
from passerelle.limits.rules import BudgetRule, from_nano
from passerelle.store.redis import CHANGED, EPOCH_GUARD, EPOCH_IS, LOST, SharedState, unreachable

log = logging.getLogger("passerelle.budget")

# nano-dollars the ledger holds for one request id (every attempt), None when it holds no row
RecordedCost = Callable[[str], Awaitable[int | None]]

RETRY_UNSTABLE_MS = 1000
MAX_UNSTABLE = 4

# KEYS: budget hash, its holds. ARGV: ledger total, stale retry time (0: done), ttl, stale
# generation read before the ledger, then pairs (hold member, its recorded cost); last the epoch.
CORRECT = """
local h, z = KEYS[1], KEYS[2]
local target = tonumber(ARGV[1])
for k = 5, #ARGV - 1, 2 do
  if redis.call('ZSCORE', z, ARGV[k]) then target = target - tonumber(ARGV[k + 1]) end
end
if target < 0 then target = 0 end
local before = tonumber(redis.call('HGET', h, 'spent') or '-1')
if before < target then redis.call('HSET', h, 'spent', target) end
local reserved = 0
for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do
  reserved = reserved + tonumber(string.match(m, ':(%d+)$'))
end
redis.call('HSET', h, 'reserved', reserved)
-- a settlement or an expiry that flagged the counter since the ledger was read: correct again
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', h, 'stale', ARGV[2])
elseif tonumber(redis.call('HGET', h, 'stale_n') or '0') == tonumber(ARGV[4]) then
  redis.call('HDEL', h, 'stale')
end
redis.call('EXPIRE', h, ARGV[3])
if redis.call('EXISTS', z) == 1 then redis.call('EXPIRE', z, ARGV[3]) end
return {before, target}
"""

# KEYS: budget hash. ARGV: epoch. A counter to be rebuilt from the ledger alone.
UNSEED = """
redis.call('HDEL', KEYS[1], 'spent')
return 1
"""

# KEYS: budget hash + holds pairs. ARGV: hold member, expiry ms, amount, per budget its ttl; epoch.
REREGISTER = """
local m, amt = ARGV[1], tonumber(ARGV[3])
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  if not redis.call('ZSCORE', z, m) then
    redis.call('ZADD', z, ARGV[2], m)
    redis.call('HINCRBY', h, 'reserved', amt)
    redis.call('EXPIRE', h, ARGV[3 + i])
    redis.call('EXPIRE', z, ARGV[3 + i])
  end
end
return 1
"""


class Books:
    """Corrects one replica's budget counters from the ledger; puts its holds back after a loss."""

    def __init__(
        self,
        state: SharedState,
        keys: Callable[[BudgetRule, float], tuple[str, str]],
        *,
        reservation_ttl_s: int,
        recorded_cost: RecordedCost | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._keys = keys
        self._ttl_s = reservation_ttl_s
        self._recorded_cost = recorded_cost
        self._clock = clock
        self._correct = state.redis.register_script(EPOCH_GUARD + CORRECT)
        self._unseed = state.redis.register_script(EPOCH_GUARD + UNSEED)
        self._reregister = state.redis.register_script(EPOCH_IS + REREGISTER)
        self.seed: Seed | None = None
        self.open: dict[str, Reservation] = {}  # admitted, not yet recorded
        self._locks: dict[str, asyncio.Lock] = {}
        self._done_at: dict[str, float] = {}
        state.register(self.put_back)

    async def correct(self, rule: BudgetRule, at: float, *, reseed: bool = False) -> None:
        """Raise the counter to what the ledger holds, less what open holds will still settle.

        ``reseed``: first take ``spent`` away, so that the counter is rebuilt from the ledger
        alone (a flagged counter: its figure is known to be short). While it is missing,
        admissions wait for it and settlements keep their holds (and are retried), so no cost
        is counted by both paths or by neither. One correction at a time per counter in this
        replica; a caller that waited for another one to finish uses its result."""
        key, holds = self._keys(rule, at)
        asked = time.monotonic()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._done_at.get(key, -1.0) >= asked:
                return
            try:
                generation = int(await self._state.redis.hget(key, "stale_n") or 0)
            except (RedisError, OSError) as exc:
                raise unreachable(exc) from exc
            if reseed:
                await self._state.run(self._unseed, [key], [])
            ledger, costs, exact = await self._snapshot(rule, at, holds)
            retry_at = 0 if exact else int(self._clock() * 1000) + RETRY_UNSTABLE_MS
            args: list[Any] = [ledger, retry_at, rule.ttl(at), generation]
            for member, cost in costs:
                args.extend([member, cost])
            out, _ = await self._state.run(self._correct, [key, holds], args)
            before, target = int(out[0]), int(out[1])
            if 0 <= before < target:
                log.warning(
                    "budget counter %s was $%s below the ledger: corrected to $%s",
                    rule.counter(at),
                    from_nano(target - before),
                    from_nano(target),
                )
            elif before < 0:
                log.info(
                    "budget counter %s seeded from the ledger: $%s",
                    rule.counter(at),
                    from_nano(target),
                )
            self._done_at[key] = time.monotonic()

    async def _snapshot(
        self, rule: BudgetRule, at: float, holds: str
    ) -> tuple[int, list[tuple[bytes, int]], bool]:
        """The ledger's total for the counter and the recorded cost of each open hold, such that
        every call in that total whose hold is still open is among those holds.

        Holds, then their recorded costs, then the ledger, then the holds again and the costs
        of those not found recorded the first time: when none of them is recorded by then, no
        call was recorded between the first look and the ledger read, and the two agree. Else
        again, up to ``MAX_UNSTABLE`` times; the last try counts every recorded hold out (short
        by at most the calls recorded during it) and asks for another correction soon."""
        recorded: dict[bytes, int] = {}
        ledger = 0
        for _ in range(MAX_UNSTABLE):
            first = await self._holds(holds)
            recorded = await self._costs(first)
            ledger = await self.seed(rule, at) if self.seed else 0
            rest = [m for m in {*first, *await self._holds(holds)} if m not in recorded]
            late = await self._costs(rest)
            if not late:
                return ledger, list(recorded.items()), True
            recorded.update(late)
        return ledger, list(recorded.items()), False

    async def _holds(self, holds: str) -> list[bytes]:
        try:
            return list(await self._state.redis.zrange(holds, 0, -1))
        except (RedisError, OSError) as exc:
            raise unreachable(exc) from exc

    async def _costs(self, members: list[bytes]) -> dict[bytes, int]:
        if self._recorded_cost is None or not members:
            return {}
        lookup = self._recorded_cost
        rids = [m.decode().rsplit(":", 1)[0] for m in members]
        found = await asyncio.gather(*(lookup(rid) for rid in rids))
        return {m: c for m, c in zip(members, found, strict=True) if c is not None}

    async def put_back(self, epoch: str) -> None:
        """Re-register this replica's open holds under a new epoch (Redis lost them)."""
        now = self._clock()
        calls = []
        for rid, reservation in list(self.open.items()):
            if reservation.admission.at + self._ttl_s <= now:
                self.open.pop(rid, None)  # expired anyway
                continue
            if reservation.admission.budgets:
                calls.append((self._reregister, *self._hold_call(reservation, epoch)))
        _check(await self._state.batch(calls))
        log.info("%d open reservations re-registered", len(calls))

    async def hold(self, reservation: Reservation, epoch: str) -> None:
        if not reservation.admission.budgets:
            return
        _check(await self._state.batch([(self._reregister, *self._hold_call(reservation, epoch))]))

    def _hold_call(self, reservation: Reservation, epoch: str) -> tuple[list[str], list[Any]]:
        a = reservation.admission
        keys: list[str] = []
        ttls: list[int] = []
        for rule in a.budgets:
            keys.extend(self._keys(rule, a.at))
            ttls.append(rule.ttl(a.at))
        expiry = int(a.at * 1000) + self._ttl_s * 1000
        member = f"{a.reservation_id}:{a.amount_nano}"
        return keys, [member, expiry, a.amount_nano, *ttls, epoch]


def _check(answers: list[Any]) -> None:
    for out in answers:
        if isinstance(out, list) and out and out[0] in (LOST, CHANGED):
            raise StoreError("redis lost its state again while reservations were re-registered")
